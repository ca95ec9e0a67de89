//! The HTTP server span: one INFO span per request, named `{METHOD} {route}` (the matched
//! route template, never the raw path, so `/runs/{run_id}` stays one name), with OTel HTTP
//! attributes. tower-http's own request/response/failure events are off: they carry
//! latencies, and the span already records the outcome.
//!
//! The span continues the caller's trace when the request carries a sampled W3C
//! `traceparent` (and `tracestate`); an unsampled one starts a trace of Metis' own. No other header is recorded — `Authorization` never reaches a span;
//! a request refused for its token gets the reason as `error` (never the token).

use axum::extract::MatchedPath;
use axum::http::{Request, Response};
use telemetry::tracing::{self, Span, field};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{MakeSpan, OnResponse, TraceLayer};

/// Builds the server span.
#[derive(Clone, Copy, Debug)]
pub struct ServerSpan;

impl<B> MakeSpan<B> for ServerSpan {
    fn make_span(&mut self, req: &Request<B>) -> Span {
        let method = req.method().as_str();
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str);
        let name = match route {
            Some(r) => format!("{method} {r}"),
            None => method.to_owned(),
        };
        let span = tracing::info_span!(
            "HTTP request",
            otel.name = %name,
            otel.kind = "server",
            otel.status_code = field::Empty,
            http.request.method = %method,
            http.route = route.unwrap_or(""),
            url.path = %req.uri().path(),
            http.response.status_code = field::Empty,
            error = field::Empty,
        );
        let trace_headers = ["traceparent", "tracestate"]
            .into_iter()
            .filter_map(|name| {
                let value = req.headers().get(name)?.to_str().ok()?;
                Some((name, value))
            });
        telemetry::propagation::set_parent_from_pairs(&span, trace_headers);
        span
    }
}

/// Records the status code (and an error status for 5xx).
#[derive(Clone, Copy, Debug)]
pub struct RecordStatus;

impl<B> OnResponse<B> for RecordStatus {
    fn on_response(self, res: &Response<B>, _latency: std::time::Duration, span: &Span) {
        // i64, so the attribute is exported as an OTLP int (u64 values become strings).
        span.record(
            "http.response.status_code",
            i64::from(res.status().as_u16()),
        );
        if res.status().is_server_error() {
            span.record("otel.status_code", "error");
        }
    }
}

/// The layer for the router.
#[must_use]
pub fn layer()
-> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, ServerSpan, (), RecordStatus, (), (), ()> {
    TraceLayer::new_for_http()
        .make_span_with(ServerSpan)
        .on_request(())
        .on_response(RecordStatus)
        .on_body_chunk(())
        .on_eos(())
        .on_failure(())
}
