//! A trace that starts in the client: a real OpenTelemetry SDK (its own tracer provider,
//! never the global one) exports one client span over OTLP/gRPC to the scenario's receiver,
//! and hands out the W3C `traceparent` / `tracestate` headers to send with a request. The
//! API's server span then continues that trace, as it would for any instrumented caller.

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The service name of the client's spans in snapshots.
pub const CLIENT_SERVICE: &str = "e2e-client";

/// One open client span.
pub struct ClientSpan {
    provider: SdkTracerProvider,
    cx: Context,
}

impl ClientSpan {
    /// Starts a client span named `name`, exported to the OTLP/gRPC `endpoint` when it ends.
    pub fn start(endpoint: &str, name: &str) -> Result<Self> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .context("building the client's OTLP exporter")?;
        let provider = SdkTracerProvider::builder()
            .with_resource(
                Resource::builder()
                    .with_service_name(CLIENT_SERVICE)
                    .build(),
            )
            .with_batch_exporter(exporter)
            .build();
        let tracer = provider.tracer(CLIENT_SERVICE);
        let span = tracer
            .span_builder(name.to_owned())
            .with_kind(SpanKind::Client)
            .with_attributes([KeyValue::new("client.purpose", "submit a workflow")])
            .start(&tracer);
        Ok(Self {
            provider,
            cx: Context::current_with_span(span),
        })
    }

    /// The headers that carry this span's context (`traceparent`, and `tracestate` if any).
    #[must_use]
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut map = HashMap::new();
        TraceContextPropagator::new().inject_context(&self.cx, &mut map);
        let mut headers: Vec<(String, String)> = map.into_iter().collect();
        headers.sort();
        headers
    }

    /// The span's trace id (32 hex digits).
    #[must_use]
    pub fn trace_id(&self) -> String {
        self.cx.span().span_context().trace_id().to_string()
    }

    /// Ends the span and exports it (waits for the export).
    pub async fn end(self) -> Result<()> {
        self.cx.span().end();
        let provider = self.provider;
        tokio::task::spawn_blocking(move || {
            provider.force_flush()?;
            provider.shutdown()
        })
        .await
        .context("joining the client's exporter")?
        .context("exporting the client's span")
    }
}
