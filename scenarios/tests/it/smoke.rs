//! The whole stack comes up, does one run, and hands back every span: the API's and the
//! engine's spans of that run share one trace id, exported gzip-compressed.

use std::collections::BTreeSet;

use harness::otlp::Query;
use opentelemetry_proto::tonic::trace::v1::TracesData;

use crate::support::{DEADLINE, run_body, stack};

fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// (service, span name, trace id) of every span.
fn spans(data: &TracesData) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for rs in &data.resource_spans {
        let service = harness::otlp::service_name(rs).unwrap_or("?").to_owned();
        for s in rs.scope_spans.iter().flat_map(|s| &s.spans) {
            out.push((service.clone(), s.name.clone(), hex(&s.trace_id)));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_one_run_one_trace_across_both_services() -> anyhow::Result<()> {
    stack("smoke", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                let run = s.client.create_run(&run_body("ok.sh")).await?;
                s.client
                    .wait_for_state(&run, &["COMPLETE"], DEADLINE)
                    .await?;
                let engine_span = s
                    .receiver
                    .wait_for(
                        &Query::new()
                            .span_name("workflow_run")
                            .min_spans(1)
                            .timeout(DEADLINE),
                    )
                    .await?;
                let (_, _, trace) = spans(&engine_span)
                    .into_iter()
                    .next()
                    .expect("one workflow_run span");
                let all = s
                    .receiver
                    .wait_for(
                        &Query::new()
                            .trace_id(trace.clone())
                            .min_spans(4)
                            .timeout(DEADLINE),
                    )
                    .await?;
                let services: BTreeSet<String> =
                    spans(&all).into_iter().map(|(svc, _, _)| svc).collect();
                assert_eq!(
                    services,
                    BTreeSet::from(["metis-api".to_owned(), "metis-engine-generic".to_owned()]),
                    "trace {trace} must hold both services' spans: {:?}",
                    spans(&all)
                );
                let names: BTreeSet<String> = spans(&all).into_iter().map(|(_, n, _)| n).collect();
                for expected in ["POST /runs", "create_run", "workflow_run"] {
                    assert!(
                        names.contains(expected),
                        "trace {trace} lacks {expected}: {names:?}"
                    );
                }
                // The services export gzip-compressed (OTEL_EXPORTER_OTLP_COMPRESSION=gzip),
                // and every export arrived that way.
                let stats = s.receiver.stats().await?;
                assert!(
                    stats.compressed_exports > 0 && stats.compressed_exports == stats.trace_exports,
                    "every export gzip-compressed: {stats:?}"
                );
                Ok(())
            })
        })
        .await
}
