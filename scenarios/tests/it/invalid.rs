//! `invalid_request`: bad requests are 400s naming the problem; their traces end in the API
//! and no engine span exists.

use harness::tree::expect;
use serde_json::json;

use crate::support::{check_tree, run_body, stack};

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
