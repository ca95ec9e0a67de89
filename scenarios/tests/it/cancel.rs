//! `cancel_running` and `cancel_queued`: a cancel is its own trace, joined to the engine's
//! `workflow_cancel` through the cancel message; a run cancelled while queued never starts.

use harness::tree::expect;
use serde_json::json;

use crate::support::{DEADLINE, check_tree, engine_ids, run_body, stack, wait_for_log};

/// **What it pins.** The run's trace ends `CANCELED`; the cancel's own trace reaches
/// `workflow_cancel`; a second cancel is a 409.
///
/// **Why it matters.** Cancellation crosses services twice: the run's own trace ends `CANCELED`,
/// and the cancel request has its own trace down to the engine's `workflow_cancel`.
///
/// **If this changes.** If `workflow_cancel` leaves the cancel's trace, the API no longer
/// propagates context on the cancel subject. A second cancel must stay a 409: a change there is an
/// API contract change.
// ANCHOR: cancel_running
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_running() -> anyhow::Result<()> {
    stack("cancel_running", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                let run = s.client.create_run(&run_body("sleep.sh")).await?;
                s.client
                    .wait_for_state(&run, &["RUNNING"], DEADLINE)
                    .await?;
                wait_for_log(s, &run, "stdout: started").await?;
                let r = s
                    .client
                    .post(&format!("/runs/{run}/cancel"), &json!({}))
                    .await?;
                assert_eq!(
                    (r.status, r.body["state"].as_str()),
                    (200, Some("CANCELING")),
                    "{}",
                    r.body
                );
                s.client
                    .wait_for_state(&run, &["CANCELED"], DEADLINE)
                    .await?;
                let again = s
                    .client
                    .post(&format!("/runs/{run}/cancel"), &json!({}))
                    .await?;
                assert_eq!(
                    again.status, 409,
                    "a finished run cannot be cancelled: {}",
                    again.body
                );

                let engines = engine_ids(s).await?;
                let forest = check_tree(s, "cancel_running", 3, &engines).await?;
                expect::span()
                    .named("workflow_run")
                    .with_attr("state", "CANCELED")
                    .once()
                    .check(&forest)?;
                expect::span()
                    .named("workflow_cancel")
                    .in_service("metis-engine-generic")
                    .descendant_of(expect::span().named("request_cancel"))
                    .once()
                    .check(&forest)?;
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: cancel_running

/// **What it pins.** A run cancelled while queued never starts: no `workflow_run`, no
/// `workflow_cancel`.
///
/// **Why it matters.** A run cancelled before any engine claimed it must never start: no
/// `workflow_run`, no `workflow_cancel`, and the record says `CANCELED`.
///
/// **If this changes.** Any engine span appearing here means a queued cancel raced with a claim and
/// lost: the compare-and-set on the run record is broken.
// ANCHOR: cancel_queued
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_queued() -> anyhow::Result<()> {
    stack("cancel_queued", 0)
        .await?
        .run(|s| {
            Box::pin(async move {
                // An engine registered its config once, then stopped: runs are accepted and wait.
                s.start_engine().await?;
                s.stop_engine(0).await?;
                let run = s.client.create_run(&run_body("ok.sh")).await?;
                assert_eq!(s.client.state(&run).await?, "QUEUED");
                let r = s
                    .client
                    .post(&format!("/runs/{run}/cancel"), &json!({}))
                    .await?;
                assert_eq!(
                    (r.status, r.body["state"].as_str()),
                    (200, Some("CANCELED")),
                    "{}",
                    r.body
                );

                // An engine that starts now receives the message and must skip it.
                s.start_engine().await?;
                let run_id = run.clone();
                s.engines[1]
                    .proc
                    .wait_for_line("the engine to skip the cancelled run", DEADLINE, |l| {
                        (l.contains("no longer queued") && l.contains(&run_id)).then_some(())
                    })
                    .await?;
                let detail = s.client.get(&format!("/runs/{run}")).await?.body;
                assert_eq!(detail["state"], "CANCELED", "{detail}");
                assert!(
                    detail.get("run_log").is_none() && detail.get("engine_id").is_none(),
                    "it never started: {detail}"
                );

                let forest = check_tree(s, "cancel_queued", 2, &[]).await?;
                expect::no_span().named("workflow_run").check(&forest)?;
                expect::no_span().named("workflow_cancel").check(&forest)?;
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: cancel_queued
