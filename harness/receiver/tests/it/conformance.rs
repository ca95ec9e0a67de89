//! What the OTLP specification asks of a server: gzip on every transport (sent by a real
//! exporter), `partial_success` for spans with invalid ids, and log records kept with their
//! trace context and served back as `LogsData`.

use std::time::Duration;

use opentelemetry::trace::{Span as _, Tracer as _};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use otlp_receiver::{LogQuery, Query, Receiver};

use super::{Tracing, Transport, http, names};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_exporter_with_gzip_on_every_transport() {
    let receiver = Receiver::start_local().await.expect("start the receiver");
    let client = receiver.client();
    for transport in [
        Transport::Grpc,
        Transport::HttpProtobuf,
        Transport::HttpJson,
    ] {
        let before = client.stats().await.expect("stats").compressed_exports;
        let service = format!("gzip-{transport:?}");
        let tracing = Tracing::with_compression(
            receiver.addresses(),
            transport,
            &service,
            Some(opentelemetry_otlp::Compression::Gzip),
        );
        let mut span = tracing.tracer().start("compressed");
        span.set_attribute(opentelemetry::KeyValue::new("padding", "x".repeat(4096)));
        span.end();
        tracing.flush().await;
        let data = client
            .wait_for(
                &Query::new()
                    .service_name(&service)
                    .min_spans(1)
                    .timeout(Duration::from_secs(10)),
            )
            .await
            .unwrap_or_else(|e| panic!("{transport:?}: the gzip export arrives: {e}"));
        assert_eq!(names(&data), [format!("{service}/compressed")]);
        let after = client.stats().await.expect("stats").compressed_exports;
        assert!(
            after > before,
            "{transport:?}: the export arrived compressed ({before} -> {after})"
        );
        tracing.shutdown().await;
    }
    receiver.shutdown().await.expect("clean shutdown");
}

fn span(name: &str, trace_id: Vec<u8>, span_id: Vec<u8>) -> Span {
    Span {
        name: name.to_owned(),
        trace_id,
        span_id,
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        ..Span::default()
    }
}

fn service(name: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![KeyValue {
            key: "service.name".to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(name.to_owned())),
            }),
            ..KeyValue::default()
        }],
        ..Resource::default()
    })
}

fn export(spans: Vec<Span>, service_name: &str) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: service(service_name),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_ids_are_a_partial_success() {
    let receiver = Receiver::start_local().await.expect("start the receiver");
    // gRPC: one good span, one with an all-zero trace id, one with a short span id.
    let mut grpc = TraceServiceClient::connect(receiver.grpc_endpoint())
        .await
        .expect("connect");
    let answer = grpc
        .export(export(
            vec![
                span("good", vec![1; 16], vec![1; 8]),
                span("zero trace", vec![0; 16], vec![2; 8]),
                span("short id", vec![1; 16], vec![3; 4]),
            ],
            "grpc",
        ))
        .await
        .expect("the export is answered")
        .into_inner();
    let partial = answer.partial_success.expect("partial_success is set");
    assert_eq!(partial.rejected_spans, 2, "{partial:?}");
    assert!(
        partial.error_message.contains("\"zero trace\"")
            && partial.error_message.contains("trace_id"),
        "{partial:?}"
    );

    // OTLP/HTTP JSON: the answer is ExportTraceServiceResponse with partialSuccess.
    let body = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "http"}}]},
        "scopeSpans": [{"spans": [
            {"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0102030405060708", "name": "good", "kind": 1, "startTimeUnixNano": "1", "endTimeUnixNano": "2"},
            {"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0000000000000000", "name": "zero id", "kind": 1, "startTimeUnixNano": "1", "endTimeUnixNano": "2"}
        ]}]
    }]});
    let response = http()
        .post(format!("{}/v1/traces", receiver.http_endpoint()))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.expect("a JSON answer");
    assert_eq!(
        answer["partialSuccess"]["rejectedSpans"].as_i64(),
        Some(1),
        "{answer}"
    );
    assert!(
        answer["partialSuccess"]["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("\"zero id\"") && m.contains("span_id")),
        "{answer}"
    );

    // Only the good spans are kept; the stats count the refused ones.
    let client = receiver.client();
    let kept = client.traces(&Query::new()).await.expect("traces");
    assert_eq!(names(&kept), ["grpc/good", "http/good"]);
    assert_eq!(client.stats().await.expect("stats").rejected_spans, 3);
    receiver.shutdown().await.expect("clean shutdown");
}

fn log(body: &str, trace_id: Vec<u8>, span_id: Vec<u8>) -> LogRecord {
    LogRecord {
        time_unix_nano: 1,
        severity_text: "INFO".to_owned(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(body.to_owned())),
        }),
        trace_id,
        span_id,
        ..LogRecord::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_kept_with_their_trace_context() {
    let receiver = Receiver::start_local().await.expect("start the receiver");
    let client = receiver.client();
    let (trace, other) = (vec![7; 16], vec![9; 16]);
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: service("metis-api"),
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    log("in the span", trace.clone(), vec![5; 8]),
                    log("elsewhere", other, vec![6; 8]),
                    log("no trace", Vec::new(), Vec::new()),
                ],
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    };
    // A waiting query is answered once the export lands (not before).
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .logs(
                    &LogQuery::new()
                        .trace_id("07070707070707070707070707070707")
                        .min_records(1)
                        .timeout(Duration::from_secs(10)),
                )
                .await
        })
    };
    let mut grpc = LogsServiceClient::connect(receiver.grpc_endpoint())
        .await
        .expect("connect");
    grpc.export(request).await.expect("the logs export");
    let found = waiting.await.expect("join").expect("the logs query");
    let records: Vec<&LogRecord> = found
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| &s.log_records)
        .collect();
    assert_eq!(records.len(), 1, "{found:?}");
    assert_eq!(records[0].trace_id, trace);
    assert_eq!(records[0].span_id, vec![5; 8]);

    let all = client
        .logs(&LogQuery::new().service_name("metis-api"))
        .await
        .expect("logs");
    assert_eq!(all.resource_logs[0].scope_logs[0].log_records.len(), 3);
    let none = client
        .logs(&LogQuery::new().service_name("metis-engine-generic"))
        .await
        .expect("logs");
    assert!(none.resource_logs.is_empty(), "{none:?}");
    // The answer is the collector's OTLP/JSON: hex ids, camelCase fields.
    let raw = http()
        .get(format!(
            "{}/v1/logs?trace_id=07070707070707070707070707070707",
            receiver.http_endpoint()
        ))
        .send()
        .await
        .expect("GET /v1/logs")
        .text()
        .await
        .expect("body");
    assert!(
        raw.contains("\"traceId\":\"07070707070707070707070707070707\"")
            && raw.contains("\"spanId\":\"0505050505050505\""),
        "{raw}"
    );
    let bad = http()
        .get(format!(
            "{}/v1/logs?trace_id=nope",
            receiver.http_endpoint()
        ))
        .send()
        .await
        .expect("GET");
    assert_eq!(bad.status(), 400);
    assert_eq!(client.stats().await.expect("stats").kept_log_records, 3);
    receiver.shutdown().await.expect("clean shutdown");
}
