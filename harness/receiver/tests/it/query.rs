//! The query API: filters by trace id, service and span name; waits that return as soon as
//! spans arrive or report a timeout with what they saw; quiet periods; clear; stats.

use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry::trace::{Span as _, TraceContextExt as _, TraceId, Tracer as _};
use otlp_receiver::{
    ClientError, Query, Receiver, ReceiverClient, RunningReceiver, SPAN_COUNT_HEADER, WAIT_HEADER,
};

use super::{Tracing, Transport, http, names, received};

/// `alpha` exports `a1` (trace 1) and `a2` (trace 2); `beta` exports `b1`, a child of `a1`
/// in trace 1 (as if called by `alpha`). Returns trace 1 and trace 2.
async fn two_services(receiver: &RunningReceiver) -> (TraceId, TraceId) {
    let alpha = Tracing::new(receiver.addresses(), Transport::Grpc, "alpha");
    let beta = Tracing::new(receiver.addresses(), Transport::Grpc, "beta");
    let (a, b) = (alpha.tracer(), beta.tracer());
    // Spans end when dropped.
    let a1 = a.start("a1").span_context().clone();
    let trace2 = a.start("a2").span_context().trace_id();
    drop(b.start_with_context("b1", &Context::new().with_remote_span_context(a1.clone())));
    alpha.flush().await;
    beta.flush().await;
    alpha.shutdown().await;
    beta.shutdown().await;
    (a1.trace_id(), trace2)
}

#[track_caller]
fn check(got: &otlp_receiver::TracesData, expected: &[&str], query: &Query) {
    assert_eq!(names(got), expected, "spans for {query:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters() {
    let receiver = Receiver::start_local().await.expect("start the receiver");
    let client = receiver.client();
    let (trace1, trace2) = two_services(&receiver).await;
    let all = ["alpha/a1", "alpha/a2", "beta/b1"];
    let cases: Vec<(Query, Vec<&str>)> = vec![
        (Query::new(), all.to_vec()),
        (
            Query::new().trace_id(trace1.to_string()),
            vec!["alpha/a1", "beta/b1"],
        ),
        (Query::new().trace_id(trace2.to_string()), vec!["alpha/a2"]),
        (
            Query::new().service_name("alpha"),
            vec!["alpha/a1", "alpha/a2"],
        ),
        (Query::new().service_name("beta"), vec!["beta/b1"]),
        (Query::new().service_name("gamma"), vec![]),
        (Query::new().span_name("a2"), vec!["alpha/a2"]),
        (Query::new().service_name("alpha").span_name("b1"), vec![]),
        (
            Query::new()
                .trace_id(trace1.to_string())
                .service_name("beta"),
            vec!["beta/b1"],
        ),
        (
            Query::new()
                .trace_id(trace2.to_string())
                .service_name("alpha")
                .span_name("a2"),
            vec!["alpha/a2"],
        ),
    ];
    for (query, expected) in &cases {
        let data = client.traces(query).await.expect("query");
        check(&data, expected, query);
        // Filtering keeps each span's resource and scope and drops empty wrappers.
        for rs in &data.resource_spans {
            assert!(
                !rs.scope_spans.is_empty() || query == &Query::new(),
                "{data:#?}"
            );
        }
        for r in received(&data) {
            assert_eq!(r.scope, "it");
        }
    }

    let err = client
        .traces(&Query::new().trace_id("not-a-trace-id"))
        .await
        .expect_err("a bad trace id is refused");
    assert!(
        matches!(&err, ClientError::Status { status, body, .. } if status.as_u16() == 400 && body.contains("trace_id")),
        "{err:?}"
    );
    let response = http()
        .get(format!(
            "{}/v1/traces?service=alpha",
            receiver.http_endpoint()
        ))
        .send()
        .await
        .expect("GET");
    assert_eq!(
        response.status(),
        400,
        "a misspelt parameter is an error, not ignored"
    );
    let body = response.text().await.expect("body");
    assert!(body.contains("unknown field"), "{body}");
    receiver.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_when_spans_arrive() {
    let receiver = Receiver::start_local().await.expect("start the receiver");
    let client = receiver.client();
    let query = Query::new()
        .service_name("late")
        .min_spans(2)
        .timeout(Duration::from_secs(60));
    let waiting = tokio::spawn({
        let client = client.clone();
        let query = query.clone();
        async move {
            let started = Instant::now();
            (client.wait(&query).await, started.elapsed())
        }
    });
    let tracing = Tracing::new(receiver.addresses(), Transport::Grpc, "late");
    let tracer = tracing.tracer();
    drop(tracer.start("first"));
    drop(tracer.start("second"));
    tracing.flush().await;
    let (result, elapsed) = waiting.await.expect("join the waiter");
    let result = result.expect("wait");
    assert!(!result.timed_out, "{result:#?}");
    assert_eq!(result.span_count, 2);
    assert_eq!(names(&result.data), ["late/first", "late/second"]);
    assert!(
        elapsed < Duration::from_secs(30),
        "answered after {elapsed:?}, not on arrival"
    );
    tracing.shutdown().await;
    receiver.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_reports_a_timeout_with_what_it_saw() {
    let receiver = Receiver::start_local().await.expect("start the receiver");
    let client = receiver.client();
    let tracing = Tracing::new(receiver.addresses(), Transport::Grpc, "api");
    drop(tracing.tracer().start("create_run"));
    tracing.flush().await;

    let query = Query::new()
        .service_name("api")
        .min_spans(2)
        .timeout(Duration::from_millis(300));
    let started = Instant::now();
    let result = client.wait(&query).await.expect("wait");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(result.timed_out);
    assert_eq!(
        names(&result.data),
        ["api/create_run"],
        "the answer holds what matched"
    );

    let err = client
        .wait_for(&query)
        .await
        .expect_err("a timeout is an error");
    assert_eq!(
        err.to_string(),
        "see at least 2 spans matching service_name=api within 300ms; saw 1 matching span: api/create_run"
    );

    // Headers, as a non-Rust client sees them.
    for (params, wait, count) in [
        ("service_name=api&min_spans=1", "ok", "1"),
        ("service_name=api&min_spans=2&timeout_ms=50", "timeout", "1"),
        ("service_name=nobody", "ok", "0"),
    ] {
        let response = http()
            .get(format!("{}/v1/traces?{params}", receiver.http_endpoint()))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 200, "{params}");
        assert_eq!(response.headers()[WAIT_HEADER], wait, "{params}");
        assert_eq!(response.headers()[SPAN_COUNT_HEADER], count, "{params}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{params}"
        );
    }
    tracing.shutdown().await;
    receiver.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_period_and_clear_and_stats() {
    let receiver = Receiver::start_local().await.expect("start the receiver");
    let client = receiver.client();
    client.health().await.expect("healthy");
    let before = client.stats().await.expect("stats");
    assert_eq!(before.spans, 0);
    assert_eq!(before.last_ingest_age_ms, None);

    let tracing = Tracing::new(receiver.addresses(), Transport::HttpProtobuf, "api");
    let tracer = tracing.tracer();
    for name in ["one", "two", "three"] {
        drop(tracer.start(name));
    }
    tracing.flush().await;
    let started = Instant::now();
    let result = client
        .wait(&Query::new().min_spans(3).quiet(Duration::from_millis(100)))
        .await
        .expect("wait");
    assert!(!result.timed_out);
    assert_eq!(result.span_count, 3);
    assert!(started.elapsed() < Duration::from_secs(5));

    let stats = client.stats().await.expect("stats");
    assert_eq!(stats.spans, 3);
    assert!(stats.resource_spans >= 1);
    assert!(stats.trace_exports >= 1);
    assert!(
        stats.last_ingest_age_ms.is_some_and(|age| age >= 100),
        "{stats:?}"
    );

    client.clear().await.expect("clear");
    let stats_after = client.stats().await.expect("stats");
    assert_eq!((stats_after.spans, stats_after.resource_spans), (0, 0));
    assert_eq!(
        stats_after.trace_exports, stats.trace_exports,
        "export counts survive a clear"
    );
    assert!(
        client
            .traces(&Query::new())
            .await
            .expect("query")
            .resource_spans
            .is_empty()
    );

    // Spans arriving after a clear are kept as usual.
    drop(tracer.start("four"));
    tracing.flush().await;
    assert_eq!(
        names(&client.traces(&Query::new()).await.expect("query")),
        ["api/four"]
    );

    assert!(ReceiverClient::new("not a url").health().await.is_err());
    tracing.shutdown().await;
    receiver.shutdown().await.expect("clean shutdown");
}
