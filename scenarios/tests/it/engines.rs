//! `engine_restart_with_queued_run` and `two_engines_share_work`: nothing is lost while no
//! engine runs, and instances of one engine share the queue. `load_200_runs`: 200 concurrent
//! runs across two engines, each run exactly once with all of its output, pinned as a census
//! of trace shapes.

use std::collections::BTreeSet;

use harness::tree::expect;

use crate::support::{DEADLINE, check_census, check_tree, engine_ids, forest_of, run_body, stack};

/// **What it pins.** A run submitted while no engine runs executes when one starts.
///
/// **Why it matters.** Runs submitted while no engine is up are kept, not lost: the stream holds
/// the message until an engine starts.
///
/// **If this changes.** A missing `workflow_run` means the message was lost or never redelivered;
/// check the consumer's ack policy and the stream's retention before accepting.
// ANCHOR: engine_restart_with_queued_run
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_restart_with_queued_run() -> anyhow::Result<()> {
    stack("engine_restart_with_queued_run", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                s.stop_engine(0).await?;
                let run = s.client.create_run(&run_body("ok.sh")).await?;
                assert_eq!(
                    s.client.state(&run).await?,
                    "QUEUED",
                    "no engine runs: the run waits"
                );
                s.start_engine().await?;
                s.client
                    .wait_for_state(&run, &["COMPLETE"], DEADLINE)
                    .await?;
                let engines = engine_ids(s).await?;
                assert_eq!(
                    engines.len(),
                    1,
                    "only the restarted engine heartbeats: {engines:?}"
                );
                let detail = s.client.get(&format!("/runs/{run}")).await?.body;
                assert_eq!(
                    detail["engine_id"].as_str(),
                    Some(engines[0].as_str()),
                    "{detail}"
                );

                let forest = check_tree(s, "engine_restart_with_queued_run", 1, &engines).await?;
                expect::span()
                    .named("workflow_run")
                    .with_attr("state", "COMPLETE")
                    .child_of(expect::span().named("publish metis.runs.generic.1.SH.1"))
                    .once()
                    .check(&forest)?;
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: engine_restart_with_queued_run

/// **What it pins.** 8 runs shared by two engine instances (asserted over HTTP), 8 identical
/// traces.
///
/// **Why it matters.** Engines of one type share one work queue: each run executes once, on
/// whichever engine takes it, and the traces look the same whichever it was.
///
/// **If this changes.** The census holds one shape ×8: each run's traces are built on their own, so
/// whichever engine ran it is `[metis-engine-generic#1]` there. A second shape, or a trace with two
/// `workflow_run` spans, means a run went differently or executed twice.
// ANCHOR: two_engines_share_work
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_share_work() -> anyhow::Result<()> {
    const RUNS: usize = 8;
    stack("two_engines_share_work", 2)
        .await?
        .run(|s| {
            Box::pin(async move {
                // 8 runs held open by a gate; one engine holds at most 4 at a time, so the other
                // must take the rest. The gate opens once both own a run.
                let gate = s.gate();
                let mut body = run_body("gated.sh");
                body["workflow_params"] = serde_json::json!({"gate": gate.display().to_string()});
                let mut runs = Vec::new();
                for _ in 0..RUNS {
                    runs.push(s.client.create_run(&body).await?);
                }
                let client = s.client.clone();
                let owners = test_support::wait_for(
                    "both engines to own a run in flight",
                    DEADLINE,
                    || async {
                        let mut owners = BTreeSet::new();
                        for run in &runs {
                            let detail = client
                                .get(&format!("/runs/{run}"))
                                .await
                                .map_err(|e| e.to_string())?
                                .body;
                            if let Some(id) = detail["engine_id"].as_str() {
                                owners.insert(id.to_owned());
                            }
                        }
                        if owners.len() == 2 {
                            Ok(owners)
                        } else {
                            Err(format!("owners so far: {owners:?}"))
                        }
                    },
                )
                .await?;
                std::fs::write(&gate, "open")?;
                for run in &runs {
                    s.client
                        .wait_for_state(run, &["COMPLETE"], DEADLINE)
                        .await?;
                }
                let engines = engine_ids(s).await?;
                assert_eq!(
                    owners,
                    engines.iter().cloned().collect(),
                    "both engines ran some of the {RUNS} runs"
                );

                // Eight runs, one shape: the census pins the count instead of eight copies.
                let data = check_census(s, "two_engines_share_work", &runs, &engines).await?;
                let forest = forest_of(&data)?;
                expect::span()
                    .named("workflow_run")
                    .with_attr("state", "COMPLETE")
                    .times(RUNS)
                    .check(&forest)?;
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: two_engines_share_work

/// **What it pins.** 200 concurrent runs on two engines: every run COMPLETE with all its lines,
/// exactly one `workflow_run` each; a census of trace shapes (one shape ×200).
///
/// **Why it matters.** Under 200 concurrent runs on two engines nothing is dropped or duplicated:
/// one trace shape, counted 200 times.
///
/// **If this changes.** A second shape in the census is a run that went differently under load; its
/// tree is shown in full. The count must stay exactly 200.
// ANCHOR: load_200_runs
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_200_runs() -> anyhow::Result<()> {
    const RUNS: usize = 200;
    stack("load_200_runs", 2)
        .await?
        .run(|s| {
            Box::pin(async move {
                let history = s.burst(RUNS, &run_body("ok.sh"), false).await?;
                let runs = history.accepted();
                assert_eq!(runs.len(), RUNS, "{:?}", history.summary());
                let states = s.check_history(&history, DEADLINE * 2).await?;
                assert!(states.values().all(|st| st == "COMPLETE"), "{states:?}");
                for run in &runs {
                    let lines = s.client.log_lines(run).await?;
                    assert_eq!(lines.len(), 4, "every line of {run}: {lines:?}");
                }
                let mut owners = BTreeSet::new();
                for run in &runs {
                    let detail = s.client.get(&format!("/runs/{run}")).await?.body;
                    owners.extend(detail["engine_id"].as_str().map(str::to_owned));
                }
                let engines = engine_ids(s).await?;
                let data = check_census(s, "load_200_runs", &runs, &engines).await?;
                // Exactly one workflow_run per run, over everything the engines exported.
                let forest = harness::tree::SpanForest::from_otlp(
                    &harness::tree::without_read_only_requests(&data),
                    &harness::tree_options().expect_traces(RUNS),
                )?;
                expect::span()
                    .named("workflow_run")
                    .with_attr("state", "COMPLETE")
                    .times(RUNS)
                    .check(&forest)?;
                assert_eq!(owners.len(), 2, "both engines took runs: {owners:?}");
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: load_200_runs
