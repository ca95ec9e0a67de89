//! `otlp_collector_down`: with the collector gone the service keeps working and warns once;
//! when the collector returns, spans resume. Spans produced during the outage are retried only
//! until the exporter's timeout (5 s) and then dropped, so whether a short outage loses them
//! depends on timing: the snapshot pins the run made after the collector returned.
//!
//! `collector_refuses`: the collector is up but refuses the first exports (gRPC UNAVAILABLE,
//! the answer of an overloaded collector). The OTLP exporter retries them (3 retries with
//! backoff), so nothing is lost and the tree is the plain run's.

use harness::otlp::Query;
use harness::tree::expect;

use crate::support::{DEADLINE, check_tree, check_tree_of, engine_ids, run_body, stack};

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

                s.restart_receiver().await?;
                let kept = s.client.create_run(&run_body("ok.sh")).await?;
                s.client
                    .wait_for_state(&kept, &["COMPLETE"], DEADLINE)
                    .await?;
                s.receiver
                    .wait_for(
                        &Query::new()
                            .span_name("workflow_run")
                            .min_spans(1)
                            .timeout(DEADLINE),
                    )
                    .await?;

                let recovered = |l: &str| l.contains("span export recovered").then_some(());
                s.api
                    .as_mut()
                    .expect("api")
                    .proc
                    .wait_for_line("metis-api to note the recovery", DEADLINE, recovered)
                    .await?;
                let engines = engine_ids(s).await?;
                let api_lines = s.api.as_ref().expect("api").proc.lines();
                let forest = check_tree_of(
                    s,
                    "otlp_collector_down",
                    1,
                    &engines,
                    Some(&[kept.as_str()]),
                )
                .await?;
                expect::span()
                    .named("workflow_run")
                    .with_attr("state", "COMPLETE")
                    .once()
                    .check(&forest)?;
                let warnings = api_lines
                    .iter()
                    .filter(|l| l.contains("span export failed"))
                    .count();
                assert_eq!(warnings, 1, "the API warns once per outage, not per batch");
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: otlp_collector_down

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
