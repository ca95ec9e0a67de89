//! `invalid_request`: bad requests are 400s naming the problem; their traces end in the API
//! and no engine span exists.

use harness::tree::expect;
use serde_json::json;

use crate::support::{check_tree, run_body, stack};

/// **What it pins.** 400s: malformed JSON stops at the HTTP span; validation failures carry `error`
/// on `create_run`; no engine span.
///
/// **Why it matters.** Bad input stops early and says why: a malformed body never reaches
/// `create_run`, a validation failure carries `error` on it, and no engine ever sees the run.
///
/// **If this changes.** An engine span here means invalid input was published. A changed `error`
/// text changes what clients read in the 400 body; keep it naming the field.
// ANCHOR: invalid_request
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_request() -> anyhow::Result<()> {
    stack("invalid_request", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                let mut unknown_engine = run_body("ok.sh");
                unknown_engine["workflow_engine"] = json!("nextflow");
                let mut bad_param = run_body("ok.sh");
                bad_param["workflow_engine_parameters"] = json!({"repeat": 99});
                let mut denied = run_body("ok.sh");
                denied["workflow_engine_parameters"] = json!({"exec": "rm -rf /"});
                for (what, body, needle) in [
                    (
                        "unknown engine",
                        unknown_engine,
                        "unknown engine 'nextflow'",
                    ),
                    (
                        "invalid parameter",
                        bad_param,
                        "workflow_engine_parameters.repeat",
                    ),
                    (
                        "denied parameter",
                        denied,
                        "workflow_engine_parameters.exec",
                    ),
                ] {
                    let r = s.client.post("/runs", &body).await?;
                    assert_eq!(r.status, 400, "{what}: {}", r.body);
                    assert!(
                        r.body["msg"].as_str().is_some_and(|m| m.contains(needle)),
                        "{what}: {}",
                        r.body
                    );
                }
                let r = s
                    .client
                    .post_raw("/runs", "application/json", b"{oops".to_vec())
                    .await?;
                assert_eq!(r.status, 400, "malformed JSON: {}", r.body);
                assert_eq!(
                    s.client.get("/runs").await?.body["runs"],
                    json!([]),
                    "nothing was stored"
                );

                let forest = check_tree(s, "invalid_request", 4, &[]).await?;
                expect::no_span().named("workflow_run").check(&forest)?;
                expect::span()
                    .named("POST /runs")
                    .with_attr("http.response.status_code", 400)
                    .times(4)
                    .check(&forest)?;
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: invalid_request

/// **What it pins.** A parameter over the kernel's limit for one process argument
/// (`MAX_ARG_STRLEN`) is a 400 naming `workflow_params.blob`, nothing stored; the largest one that
/// fits runs and comes back byte for byte (split into 16 KiB log pieces).
///
/// **Why it matters.** A request the engine could not execute is refused at the door: a
/// parameter over the kernel's limit for one process argument was accepted and then ended
/// `SYSTEM_ERROR` "Argument list too long". Now it is a 400 naming the field, and nothing is
/// stored or published.
///
/// **If this changes.** A `workflow_run` here means the oversized run was published again; a 200
/// means the API's limits no longer match what `execve` accepts.
// ANCHOR: oversized_argument
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_argument() -> anyhow::Result<()> {
    stack("oversized_argument", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                let mut body = run_body("args.sh");
                body["workflow_params"] = json!({"blob": "x".repeat(200 * 1024)});
                let r = s.client.post("/runs", &body).await?;
                assert_eq!(r.status, 400, "{}", r.body);
                let msg = r.body["msg"].as_str().unwrap_or_default().to_owned();
                assert!(
                    msg.contains("workflow_params.blob") && msg.contains("MAX_ARG_STRLEN"),
                    "{msg}"
                );
                assert_eq!(
                    s.client.get("/runs").await?.body["runs"],
                    json!([]),
                    "nothing was stored"
                );
                // The largest argument the kernel takes still runs, byte for byte.
                let fits = "y".repeat(common_max_arg());
                body["workflow_params"] = json!({"blob": fits});
                let run = s.client.create_run(&body).await?;
                s.client
                    .wait_for_state(&run, &["COMPLETE"], crate::support::DEADLINE)
                    .await?;
                let lines = s.client.log_lines(&run).await?;
                let joined: String = lines
                    .iter()
                    .filter_map(|l| l.strip_prefix("stdout: "))
                    .skip(1)
                    .collect();
                assert_eq!(
                    joined.len(),
                    common_max_arg(),
                    "the argument came back whole"
                );

                let forest = check_tree(s, "oversized_argument", 2, &[]).await?;
                expect::span()
                    .named("POST /runs")
                    .with_attr("http.response.status_code", 400)
                    .once()
                    .check(&forest)?;
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: oversized_argument

/// The kernel's limit for one argument (`MAX_ARG_STRLEN` less its NUL), as the API applies it.
const fn common_max_arg() -> usize {
    32 * 4096 - 1
}
