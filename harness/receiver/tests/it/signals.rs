//! Logs and metrics exports are accepted (and counted) over gRPC and OTLP/HTTP.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{Metric, ResourceMetrics, ScopeMetrics};
use otlp_receiver::Receiver;
use prost::Message as _;

use super::http;

fn logs(records: usize) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: (0..records)
                    .map(|i| LogRecord {
                        severity_text: "INFO".to_owned(),
                        time_unix_nano: i as u64 + 1,
                        ..LogRecord::default()
                    })
                    .collect(),
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}

fn metrics(names: &[&str]) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: names
                    .iter()
                    .map(|name| Metric {
                        name: (*name).to_owned(),
                        ..Metric::default()
                    })
                    .collect(),
                ..ScopeMetrics::default()
            }],
            ..ResourceMetrics::default()
        }],
    }
}

#[tokio::test]
async fn logs_and_metrics_are_accepted() {
    let receiver = Receiver::start_local().await.expect("start the receiver");

    let mut logs_client = LogsServiceClient::connect(receiver.grpc_endpoint())
        .await
        .expect("connect");
    logs_client.export(logs(2)).await.expect("gRPC logs export");
    let mut metrics_client = MetricsServiceClient::connect(receiver.grpc_endpoint())
        .await
        .expect("connect");
    metrics_client
        .export(metrics(&["runs.created"]))
        .await
        .expect("gRPC metrics export");

    let base = receiver.http_endpoint();
    for (path, content_type, body) in [
        (
            "/v1/logs",
            "application/x-protobuf",
            logs(3).encode_to_vec(),
        ),
        (
            "/v1/logs",
            "application/json",
            serde_json::to_vec(&logs(1)).unwrap(),
        ),
        (
            "/v1/metrics",
            "application/x-protobuf",
            metrics(&["a", "b"]).encode_to_vec(),
        ),
        (
            "/v1/metrics",
            "application/json; charset=utf-8",
            serde_json::to_vec(&metrics(&["c"])).unwrap(),
        ),
    ] {
        let response = http()
            .post(format!("{base}{path}"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 200, "POST {path} ({content_type})");
        let answered = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with(&answered),
            "answered {answered} to {content_type}"
        );
    }

    let stats = receiver.client().stats().await.expect("stats");
    assert_eq!((stats.log_exports, stats.log_records), (3, 6), "{stats:?}");
    assert_eq!((stats.metric_exports, stats.metrics), (3, 4), "{stats:?}");
    assert_eq!((stats.trace_exports, stats.spans), (0, 0), "{stats:?}");
    receiver.shutdown().await.expect("clean shutdown");
}
