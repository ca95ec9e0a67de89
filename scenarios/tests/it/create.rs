//! `create_run`: the API side alone. With no engine running, a run is accepted, stored QUEUED
//! and published; its trace ends at the producer span.

use harness::tree::expect;

use crate::support::{check_tree, run_body, stack};

/// **What it pins.** The API side alone: `POST /runs` → `create_run` → `publish` (no engine runs).
///
/// **Why it matters.** The API's half of every trace: what a client's `POST /runs` records before
/// any engine is involved. Every other scenario's tree starts with these three spans.
///
/// **If this changes.** A new or missing span here changes every trace of the service. Check that
/// `create_run` still carries `run_id`, `user_id` and the workflow fields, and that `publish` is
/// still the producer span whose context the engine continues.
// ANCHOR: create_run
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_run() -> anyhow::Result<()> {
    stack("create_run", 0)
        .await?
        .run(|s| {
            Box::pin(async move {
                // An engine registered its config once, then stopped: runs are accepted and wait.
                s.start_engine().await?;
                s.stop_engine(0).await?;
                let mut body = run_body("ok.sh");
                body["tags"] = serde_json::json!({"project": "demo"});
                let run = s.client.create_run(&body).await?;
                assert_eq!(s.client.state(&run).await?, "QUEUED");
                let listed = s.client.get("/runs").await?.body;
                assert_eq!(listed["runs"][0]["run_id"], run.as_str(), "{listed}");
                assert_eq!(listed["runs"][0]["tags"]["project"], "demo");

                let forest = check_tree(s, "create_run", 1, &[]).await?;
                expect::span()
                    .named("create_run")
                    .child_of(expect::span().named("POST /runs"))
                    .once()
                    .check(&forest)?;
                expect::no_span().named("workflow_run").check(&forest)?;
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: create_run
