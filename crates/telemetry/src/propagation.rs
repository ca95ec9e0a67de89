//! W3C trace context (`traceparent`) across NATS message headers, and from HTTP requests.
//!
//! An HTTP client that sends `traceparent` (and `tracestate`) makes the API's server span a
//! child of its own span ([`set_parent_from_pairs`]), so a trace can start in the client.
//!
//! The API injects the context of its producer span into the headers of every run and cancel
//! message; the engine extracts it and makes its `workflow_run` / `workflow_cancel` span a
//! child, so one trace spans both services.

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

/// Writes `span`'s context into `headers` as `traceparent` (and `tracestate`).
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
}

/// Reads the context a message carries; an empty context when there is none or it is malformed.
#[must_use]
pub fn extract(headers: Option<&HeaderMap>) -> opentelemetry::Context {
    match headers {
        Some(h) => TraceContextPropagator::new().extract(&HeaderExtractor(h)),
        None => opentelemetry::Context::new(),
    }
}

/// Makes `span` a child of the context `headers` carry. Call before the span is entered.
pub fn set_parent_from(span: &tracing::Span, headers: Option<&HeaderMap>) {
    let cx = extract(headers);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Header lookups over `(name, value)` pairs; names compared case-insensitively.
struct PairsExtractor<'a>(Vec<(&'a str, &'a str)>);

impl Extractor for PairsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| *v)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| *k).collect()
    }
}

/// Makes `span` a child of the W3C context in `headers` (e.g. an HTTP request's); a missing
/// or malformed `traceparent` leaves it a root. A caller's *unsampled* context is not
/// continued either: the SDK's parent-based sampling would drop the span — and with it the
/// only record of a refused request and the run's whole trace — on the caller's word; Metis
/// records its own work. Call before the span is entered.
pub fn set_parent_from_pairs<'a>(
    span: &tracing::Span,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    let pairs = PairsExtractor(headers.into_iter().collect());
    let cx = TraceContextPropagator::new().extract(&pairs);
    let sc = cx.span().span_context().clone();
    if sc.is_valid() && sc.is_sampled() {
        let _ = span.set_parent(cx);
    }
}

/// `span`'s OpenTelemetry span id as 16 hex digits, when it has one.
#[must_use]
pub fn span_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.span_id().to_string())
}

/// `span`'s OpenTelemetry trace id as 32 hex digits, when it has one.
#[must_use]
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TelemetryConfig, build};

    /// A subscriber with the OpenTelemetry layer and no export.
    fn subscriber() -> (
        impl tracing::Subscriber + Send + Sync,
        crate::TelemetryGuard,
        Vec<String>,
    ) {
        build(TelemetryConfig {
            service_name: "t".into(),
            filter: None,
            format: None,
            otlp_endpoint: None,
        })
    }

    #[test]
    fn context_round_trips_through_headers() {
        let (sub, _guard, _) = subscriber();
        tracing::subscriber::with_default(sub, || {
            let producer = tracing::info_span!("publish");
            let mut headers = HeaderMap::new();
            inject(&producer, &mut headers);
            let tp = headers
                .get("traceparent")
                .expect("traceparent header")
                .to_string();
            let trace = trace_id(&producer).unwrap();
            let span = span_id(&producer).unwrap();
            assert_eq!(span.len(), 16);
            assert_eq!(tp, format!("00-{trace}-{span}-01"));

            let consumer = tracing::info_span!("workflow_run");
            set_parent_from(&consumer, Some(&headers));
            assert_eq!(
                trace_id(&consumer).unwrap(),
                trace,
                "consumer joins the producer's trace"
            );
            assert_ne!(span_id(&consumer).unwrap(), span);

            let mut bad = HeaderMap::new();
            bad.insert("traceparent", "garbage");
            let orphan = tracing::info_span!("workflow_run");
            set_parent_from(&orphan, Some(&bad));
            assert_ne!(
                trace_id(&orphan).unwrap(),
                trace,
                "a malformed header starts a new trace"
            );
        });
    }

    #[test]
    fn http_headers_continue_a_sampled_trace_only() {
        let (sub, _guard, _) = subscriber();
        tracing::subscriber::with_default(sub, || {
            let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
            let sampled = format!("00-{trace}-00f067aa0ba902b7-01");
            let server = tracing::info_span!("POST /runs");
            set_parent_from_pairs(&server, [("TraceParent", sampled.as_str())]);
            assert_eq!(
                trace_id(&server).unwrap(),
                trace,
                "names are case-insensitive"
            );

            let unsampled = format!("00-{trace}-00f067aa0ba902b7-00");
            let own = tracing::info_span!("POST /runs");
            set_parent_from_pairs(&own, [("traceparent", unsampled.as_str())]);
            assert_ne!(
                trace_id(&own).unwrap(),
                trace,
                "an unsampled caller does not switch off Metis' spans"
            );
            let none = tracing::info_span!("POST /runs");
            set_parent_from_pairs(&none, []);
            assert_ne!(trace_id(&none).unwrap(), trace);
        });
    }
}
