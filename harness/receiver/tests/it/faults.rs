//! Fault modes: refused exports are answered as the OTLP spec's retryable failures, a real
//! exporter retries them, and nothing refused is kept.

use opentelemetry::trace::{Span as _, Tracer as _};
use otlp_receiver::fault::{FaultMode, Refusal};
use otlp_receiver::{Query, Receiver};

use super::{Tracing, Transport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_exporter_retries_refused_grpc_exports() {
    let receiver = Receiver::start_local().await.expect("start the receiver");
    let client = receiver.client();
    let set = client
        .set_faults(&FaultMode {
            refuse: 2,
            ..FaultMode::default()
        })
        .await
        .expect("set the fault mode");
    assert_eq!(set.mode.refuse, 2);

    let tracing = Tracing::new(receiver.addresses(), Transport::Grpc, "it-faults");
    let tracer = tracing.tracer();
    tracer.start("survives two refusals").end();
    tracing.flush().await;

    let data = client
        .wait_for(&Query::new().span_name("survives two refusals").min_spans(1))
        .await
        .expect("the span arrives after the exporter's retries");
    assert_eq!(otlp_receiver::span_count(&data), 1, "kept once");
    let status = client.faults().await.expect("read the fault mode");
    assert_eq!((status.refused, status.mode.refuse), (2, 0), "{status:?}");
    tracing.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_refusals_are_503_or_429_with_retry_after() {
    let receiver = Receiver::start_local().await.expect("start the receiver");
    let client = receiver.client();
    let url = format!("http://{}/v1/traces", receiver.addresses().http);
    let http = reqwest::Client::new();
    let post = || {
        http.post(&url)
            .header("content-type", "application/json")
            .body(r#"{"resourceSpans":[]}"#)
            .send()
    };
    client
        .set_faults(&FaultMode {
            refuse: 1,
            ..FaultMode::default()
        })
        .await
        .unwrap();
    assert_eq!(post().await.unwrap().status(), 503);
    assert_eq!(post().await.unwrap().status(), 200, "one refusal only");

    client
        .set_faults(&FaultMode {
            refuse: 1,
            refuse_with: Refusal::Throttled,
            retry_after_s: 7,
            delay_ms: 0,
        })
        .await
        .unwrap();
    let throttled = post().await.unwrap();
    assert_eq!(throttled.status(), 429);
    assert_eq!(
        throttled
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("7".to_owned())
    );
    client.clear_faults().await.unwrap();
    assert_eq!(client.faults().await.unwrap().mode, FaultMode::default());
    let bad = http
        .put(format!("http://{}/v1/faults", receiver.addresses().http))
        .header("content-type", "application/json")
        .body(r#"{"refuse": "lots"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400, "a bad fault mode is refused");
}
