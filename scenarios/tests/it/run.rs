//! `run_completes` and `run_fails`: one trace from the HTTP request through NATS to the
//! engine's `workflow_run`, which ends COMPLETE or EXECUTOR_ERROR.

use harness::tree::expect;
use serde_json::json;

use crate::support::{DEADLINE, check_tree, engine_ids, run_body, stack};

const PHASES: [&str; 7] = [
    "initializing",
    "building",
    "executing",
    "running",
    "parsing",
    "updating_db",
    "cleanup",
];

/// **What it pins.** One trace across both services, `workflow_run` ends `COMPLETE` with every
/// phase event.
///
/// **Why it matters.** The one-trace-across-two-services promise: the engine's `workflow_run` hangs
/// under the API's `publish`, with every runtime phase as an event. This is the tree the cluster
/// scenarios must equal.
///
/// **If this changes.** A phase event that moved or vanished is a change of the engine's runtime; a
/// `workflow_run` that became a root means trace context no longer crosses NATS. Both need a reason
/// in the commit message.
// ANCHOR: run_completes
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_completes() -> anyhow::Result<()> {
    stack("run_completes", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                let mut body = run_body("ok.sh");
                body["workflow_engine_parameters"] = json!({"greeting": "hello"});
                body["workflow_params"] = json!({"sample": "s1"});
                let run = s.client.create_run(&body).await?;
                s.client
                    .wait_for_state(&run, &["COMPLETE"], DEADLINE)
                    .await?;
                let detail = s.client.get(&format!("/runs/{run}")).await?.body;
                assert_eq!(detail["run_log"]["exit_code"], 0, "{detail}");
                let lines = s.client.log_lines(&run).await?;
                // Each stream keeps its order; how the two interleave depends on the pipes.
                let of = |stream: &str| {
                    lines
                        .iter()
                        .filter(|l| l.starts_with(stream))
                        .cloned()
                        .collect::<Vec<_>>()
                };
                assert_eq!(
                    of("stdout: "),
                    [
                        "stdout: ok: starting",
                        "stdout: ok: working",
                        "stdout: arg: --greeting",
                        "stdout: arg: hello",
                        "stdout: arg: --sample",
                        "stdout: arg: s1"
                    ]
                );
                assert_eq!(
                    of("stderr: "),
                    ["stderr: ok: a warning on stderr", "stderr: ok: done"]
                );

                let engines = engine_ids(s).await?;
                let forest = check_tree(s, "run_completes", 1, &engines).await?;
                expect::span()
                    .named("workflow_run")
                    .in_service("metis-engine-generic")
                    .with_attr("state", "COMPLETE")
                    .with_events_in_order(PHASES)
                    .descendant_of(expect::span().named("create_run"))
                    .once()
                    .check(&forest)?;
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: run_completes

/// **What it pins.** Non-zero exit: `EXECUTOR_ERROR`, the `error` field and an ERROR status.
///
/// **Why it matters.** A workflow that exits non-zero must end `EXECUTOR_ERROR` with the exit
/// status in the span's status and `error` field, so an operator can find failed runs by span
/// status alone.
///
/// **If this changes.** A lost `!ERROR` status or `error` attribute hides failures from every trace
/// backend. A changed `state` value is a lifecycle change and belongs with a change of
/// `State::can_transition`.
// ANCHOR: run_fails
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_fails() -> anyhow::Result<()> {
    stack("run_fails", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                let run = s.client.create_run(&run_body("fail.sh")).await?;
                s.client
                    .wait_for_state(&run, &["EXECUTOR_ERROR"], DEADLINE)
                    .await?;
                let detail = s.client.get(&format!("/runs/{run}")).await?.body;
                assert_eq!(detail["run_log"]["exit_code"], 3, "{detail}");
                assert!(
                    detail["error"].as_str().is_some_and(|e| e.contains('3')),
                    "{detail}"
                );
                let lines = s.client.log_lines(&run).await?;
                assert!(
                    lines.contains(&"stderr: fail: something went wrong".to_owned()),
                    "{lines:?}"
                );

                let engines = engine_ids(s).await?;
                let forest = check_tree(s, "run_fails", 1, &engines).await?;
                expect::span()
                    .named("workflow_run")
                    .with_attr("state", "EXECUTOR_ERROR")
                    .once()
                    .check(&forest)?;
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: run_fails
