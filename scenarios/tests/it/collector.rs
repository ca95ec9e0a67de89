//! `otlp_collector_down`: with the collector gone the services keep working and warn once;
//! when the collector returns, spans resume. What an outage loses is made deterministic by the
//! order of events, never by waiting: a run finished during the outage (`lost`) is gone
//! entirely (each service warned, so its only batch failed, and the API exits before the
//! collector returns); a run that is still running when the API exits and the collector
//! returns (`partial`) keeps only the engine's spans (the API's failed to export during the
//! outage, and its exit flushed what was left before the collector came back), and its snapshot pins that partial trace
//! with the missing API side drawn as a `[missing parent]`; a run after the outage (`kept`) is
//! whole.
//!
//! `collector_refuses`: the collector is up but refuses the first exports (gRPC UNAVAILABLE,
//! the answer of an overloaded collector). The OTLP exporter retries them (3 retries with
//! backoff), so nothing is lost and the tree is the plain run's.

use harness::otlp::Query;
use harness::tree::expect;

use crate::support::{DEADLINE, check_partial_tree_of, check_tree, engine_ids, run_body, stack};

/// **What it pins.** The service works and warns once while the collector is down; spans resume
/// when it returns; a run whose API side was lost in the outage is pinned as a partial trace under
/// a `[missing parent]`.
///
/// **Why it matters.** Telemetry must never take the service down: with the collector gone, runs
/// still complete, each service warns once, and what was lost is exactly what the order of events
/// says.
///
/// **If this changes.** If the partial trace gains the API's spans, a batch that failed during
/// the outage was delivered after all (retried past the exporter's timeout, or queued again);
/// if it loses the engine's, export after an outage does not resume.
// ANCHOR: otlp_collector_down
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_collector_down() -> anyhow::Result<()> {
    stack("otlp_collector_down", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                s.expect_export_outage();
                s.stop_receiver().await?;
                let lost = s.client.create_run(&run_body("ok.sh")).await?;
                s.client
                    .wait_for_state(&lost, &["COMPLETE"], DEADLINE)
                    .await?;
                // Both services tried to export this run's spans, failed, and said so once.
                let warned = |l: &str| l.contains("span export failed").then_some(());
                s.api
                    .as_mut()
                    .expect("api")
                    .proc
                    .wait_for_line("metis-api to warn about the collector", DEADLINE, warned)
                    .await?;
                s.engines[0]
                    .proc
                    .wait_for_line("the engine to warn about the collector", DEADLINE, warned)
                    .await?;

                // A run the engine is still running when the API goes away during the outage:
                // the API's spans of it fail to export (the collector is still down) and its
                // exit flushes nothing later; the engine's end after the collector is back.
                let gate = s.gate();
                let mut gated = run_body("gated.sh");
                gated["workflow_params"] = serde_json::json!({"gate": gate.display().to_string()});
                let partial = s.client.create_run(&gated).await?;
                s.client
                    .wait_for_state(&partial, &["RUNNING"], DEADLINE)
                    .await?;
                let api_lines = s.api.as_ref().expect("api").proc.lines();
                s.stop_api().await?;
                let warnings = api_lines
                    .iter()
                    .filter(|l| l.contains("span export failed"))
                    .count();
                assert_eq!(warnings, 1, "the API warns once per outage, not per batch");

                s.restart_receiver().await?;
                s.restart_api().await?;
                std::fs::write(&gate, "open")?;
                s.client
                    .wait_for_state(&partial, &["COMPLETE"], DEADLINE)
                    .await?;
                let kept = s.client.create_run(&run_body("ok.sh")).await?;
                s.client
                    .wait_for_state(&kept, &["COMPLETE"], DEADLINE)
                    .await?;
                s.receiver
                    .wait_for(
                        &Query::new()
                            .span_name("workflow_run")
                            .min_spans(2)
                            .timeout(DEADLINE),
                    )
                    .await?;
                let recovered = |l: &str| l.contains("span export recovered").then_some(());
                s.engines[0]
                    .proc
                    .wait_for_line("the engine to note the recovery", DEADLINE, recovered)
                    .await?;

                let engines = engine_ids(s).await?;
                let forest = check_partial_tree_of(
                    s,
                    "otlp_collector_down",
                    2,
                    &engines,
                    &[partial.as_str(), kept.as_str()],
                )
                .await?;
                expect::span()
                    .named("workflow_run")
                    .with_attr("state", "COMPLETE")
                    .times(2)
                    .check(&forest)?;
                expect::span()
                    .named(harness::tree::MISSING_PARENT)
                    .once()
                    .check(&forest)?;
                // Nothing of the run that finished during the outage arrived, from either side.
                let data = s.spans_now().await?;
                let lost_spans = harness::tree::only_traces_with(&data, "run_id", &[lost.as_str()]);
                anyhow::ensure!(
                    lost_spans.resource_spans.is_empty(),
                    "spans of the run finished during the outage arrived: {lost_spans:?}"
                );
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: otlp_collector_down

/// **What it pins.** The collector refuses the first two exports (UNAVAILABLE): the exporters
/// retry, nothing is lost, the tree is the plain run's.
///
/// **Why it matters.** An overloaded collector answers UNAVAILABLE; the exporters retry, so a short
/// refusal loses nothing and the tree is the plain run's.
///
/// **If this changes.** Any difference from `run_completes` means the retry policy changed: spans
/// are lost or exported twice.
// ANCHOR: collector_refuses
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_refuses() -> anyhow::Result<()> {
    stack("collector_refuses", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                s.refuse_exports(2, harness::otlp::fault::Refusal::Unavailable)
                    .await?;
                let run = s.client.create_run(&run_body("ok.sh")).await?;
                s.client
                    .wait_for_state(&run, &["COMPLETE"], DEADLINE)
                    .await?;
                let receiver = s.receiver.clone();
                test_support::wait_for("the receiver to refuse two exports", DEADLINE, || async {
                    match receiver.faults().await {
                        Ok(f) if f.refused == 2 => Ok(()),
                        Ok(f) => Err(format!("{f:?}")),
                        Err(e) => Err(e.to_string()),
                    }
                })
                .await?;
                let engines = engine_ids(s).await?;
                let forest = check_tree(s, "collector_refuses", 1, &engines).await?;
                expect::span()
                    .named("workflow_run")
                    .with_attr("state", "COMPLETE")
                    .once()
                    .check(&forest)?;
                for service in ["metis-api", "metis-engine-generic"] {
                    let proc = if service == "metis-api" {
                        &s.api.as_ref().expect("api").proc
                    } else {
                        &s.engines[0].proc
                    };
                    assert!(
                        !proc
                            .lines()
                            .iter()
                            .any(|l| l.contains("span export failed")),
                        "{service}: a retried export is not a failure"
                    );
                }
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: collector_refuses
