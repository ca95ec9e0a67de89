//! Spans exported by a real `opentelemetry-otlp` exporter come back whole: names, kinds,
//! attributes, events, parent links, resource and scope — over gRPC, HTTP/protobuf and
//! HTTP/JSON — and `GET /v1/traces` speaks the collector's OTLP/JSON encoding.

use std::time::Duration;

use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span;
use otlp_receiver::{Query, Receiver};

use super::{Tracing, Transport, attribute, received};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_grpc() {
    round_trip(Transport::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_protobuf() {
    round_trip(Transport::HttpProtobuf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_json() {
    round_trip(Transport::HttpJson).await;
}

async fn round_trip(transport: Transport) {
    let receiver = Receiver::start_local().await.expect("start the receiver");
    let service = format!("it-{transport:?}");
    let tracing = Tracing::new(receiver.addresses(), transport, &service);
    let tracer = tracing.tracer();

    let parent = tracer
        .span_builder("POST /runs")
        .with_kind(SpanKind::Server)
        .with_attributes([KeyValue::new("http.route", "/runs")])
        .start(&tracer);
    let parent_context = parent.span_context().clone();
    let cx = Context::current_with_span(parent);
    let mut child = tracer
        .span_builder("create_run")
        .with_attributes([
            KeyValue::new("answer", 42),
            KeyValue::new("ok", true),
            KeyValue::new("ratio", 0.5),
        ])
        .start_with_context(&tracer, &cx);
    child.add_event("Run created", vec![KeyValue::new("run_id", "r-1")]);
    let child_context = child.span_context().clone();
    child.end();
    cx.span().end();
    tracing.flush().await;

    let client = receiver.client();
    let data = client
        .wait_for(
            &Query::new()
                .service_name(&service)
                .min_spans(2)
                .timeout(Duration::from_secs(10)),
        )
        .await
        .expect("both spans arrive");
    let spans = received(&data);
    assert_eq!(spans.len(), 2, "{spans:#?}");
    for r in &spans {
        assert_eq!(r.service, service);
        assert_eq!(r.scope, "it");
        assert_eq!(r.span.trace_id, parent_context.trace_id().to_bytes());
    }
    let by_name = |name: &str| {
        spans
            .iter()
            .find(|r| r.span.name == name)
            .unwrap_or_else(|| panic!("no span {name:?} in {spans:#?}"))
            .span
    };
    let (parent, child) = (by_name("POST /runs"), by_name("create_run"));

    assert_eq!(parent.span_id, parent_context.span_id().to_bytes());
    assert!(parent.parent_span_id.is_empty(), "the root has no parent");
    assert_eq!(parent.kind, span::SpanKind::Server as i32);
    assert_eq!(
        attribute(&parent.attributes, "http.route"),
        Some(&Value::StringValue("/runs".to_owned()))
    );

    assert_eq!(child.span_id, child_context.span_id().to_bytes());
    assert_eq!(
        child.parent_span_id, parent.span_id,
        "child links to its parent"
    );
    assert_eq!(child.kind, span::SpanKind::Internal as i32);
    assert_eq!(
        attribute(&child.attributes, "answer"),
        Some(&Value::IntValue(42))
    );
    assert_eq!(
        attribute(&child.attributes, "ok"),
        Some(&Value::BoolValue(true))
    );
    assert_eq!(
        attribute(&child.attributes, "ratio"),
        Some(&Value::DoubleValue(0.5))
    );
    assert_eq!(child.events.len(), 1);
    assert_eq!(child.events[0].name, "Run created");
    assert_eq!(
        attribute(&child.events[0].attributes, "run_id"),
        Some(&Value::StringValue("r-1".to_owned()))
    );
    assert!(
        child.start_time_unix_nano > 0 && child.end_time_unix_nano >= child.start_time_unix_nano
    );

    // The raw answer is the collector file-exporter encoding: camelCase, hex ids, int64 as
    // strings, enums as numbers.
    let json: serde_json::Value = serde_json::from_str(
        &client
            .traces_json(&Query::new().span_name("create_run"))
            .await
            .expect("query the raw json"),
    )
    .expect("the answer is JSON");
    let raw = &json["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(
        raw["traceId"],
        parent_context.trace_id().to_string(),
        "{json:#}"
    );
    assert_eq!(
        raw["spanId"],
        child_context.span_id().to_string(),
        "{json:#}"
    );
    assert_eq!(
        raw["parentSpanId"],
        parent_context.span_id().to_string(),
        "{json:#}"
    );
    assert_eq!(raw["kind"], 1, "{json:#}");
    assert!(raw["startTimeUnixNano"].is_string(), "{json:#}");
    let resource_attributes = json["resourceSpans"][0]["resource"]["attributes"]
        .as_array()
        .expect("resource attributes");
    assert!(
        resource_attributes.contains(
            &serde_json::json!({"key": "service.name", "value": {"stringValue": service}})
        ),
        "{json:#}"
    );
    assert_eq!(
        json["resourceSpans"][0]["scopeSpans"][0]["scope"]["name"],
        "it"
    );

    tracing.shutdown().await;
    receiver.shutdown().await.expect("clean shutdown");
}
