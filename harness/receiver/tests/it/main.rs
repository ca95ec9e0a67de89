//! Integration tests of the fake OTLP receiver, driven by a real `opentelemetry-otlp` exporter and by raw clients.
//!
//! Nothing here sleeps: exporters are flushed, and the receiver is asked to wait.

mod binary;
mod conformance;
mod export;
mod faults;
mod malformed;
mod query;
mod signals;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter};
use otlp_receiver::{Addresses, TracesData, service_name};

/// How a [`Tracing`] exports.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Transport {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

/// An `SdkTracerProvider` with a batch `opentelemetry-otlp` exporter pointed at a receiver.
pub(crate) struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Exports spans of `service` to the receiver at `to` over `transport`. Call inside a
    /// multi-threaded Tokio runtime.
    pub(crate) fn new(to: Addresses, transport: Transport, service: &str) -> Self {
        Self::with_compression(to, transport, service, None)
    }

    /// [`Tracing::new`] with the exporter compressing every export (`Some(Gzip)`).
    pub(crate) fn with_compression(
        to: Addresses,
        transport: Transport,
        service: &str,
        compression: Option<opentelemetry_otlp::Compression>,
    ) -> Self {
        use opentelemetry_otlp::{WithHttpConfig as _, WithTonicConfig as _};
        let builder = opentelemetry_otlp::SpanExporter::builder();
        let exporter = match transport {
            Transport::Grpc => {
                let b = builder
                    .with_tonic()
                    .with_endpoint(format!("http://{}", to.grpc));
                match compression {
                    Some(c) => b.with_compression(c).build(),
                    None => b.build(),
                }
            }
            Transport::HttpProtobuf | Transport::HttpJson => {
                let b = builder
                    .with_http()
                    .with_protocol(if matches!(transport, Transport::HttpJson) {
                        Protocol::HttpJson
                    } else {
                        Protocol::HttpBinary
                    })
                    .with_endpoint(format!("http://{}/v1/traces", to.http));
                match compression {
                    Some(c) => b.with_compression(c).build(),
                    None => b.build(),
                }
            }
        }
        .expect("build the span exporter");
        let provider = SdkTracerProvider::builder()
            .with_resource(
                Resource::builder_empty()
                    .with_service_name(service.to_owned())
                    .build(),
            )
            .with_batch_exporter(OnRuntime {
                inner: Arc::new(exporter),
                runtime: tokio::runtime::Handle::current(),
            })
            .build();
        Self { provider }
    }

    /// A tracer whose instrumentation scope is `it`.
    pub(crate) fn tracer(&self) -> SdkTracer {
        self.provider.tracer("it")
    }

    /// Exports every ended span and returns once the receiver has answered.
    pub(crate) async fn flush(&self) {
        let provider = self.provider.clone();
        tokio::task::spawn_blocking(move || provider.force_flush())
            .await
            .expect("join force_flush")
            .expect("force_flush the tracer provider");
    }

    /// Flushes and shuts the provider down.
    pub(crate) async fn shutdown(self) {
        let provider = self.provider;
        tokio::task::spawn_blocking(move || provider.shutdown())
            .await
            .expect("join shutdown")
            .expect("shut the tracer provider down");
    }
}

/// Runs each export on the Tokio runtime: the batch processor exports from its own thread,
/// where neither tonic nor reqwest would find a reactor.
#[derive(Debug)]
struct OnRuntime {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Handle,
}

impl SpanExporter for OnRuntime {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let inner = Arc::clone(&self.inner);
        self.runtime
            .spawn(async move { inner.export(batch).await })
            .await
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))?
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        Arc::get_mut(&mut self.inner)
            .expect("the resource is set before the first export")
            .set_resource(resource);
    }
}

/// One received span with its service and scope names.
#[derive(Debug)]
pub(crate) struct Received<'a> {
    pub(crate) service: &'a str,
    pub(crate) scope: &'a str,
    pub(crate) span: &'a Span,
}

/// Every span in `data`, in order.
pub(crate) fn received(data: &TracesData) -> Vec<Received<'_>> {
    data.resource_spans
        .iter()
        .flat_map(|rs| {
            let service = service_name(rs).unwrap_or("?");
            rs.scope_spans.iter().flat_map(move |ss| {
                let scope = ss.scope.as_ref().map_or("?", |s| s.name.as_str());
                ss.spans.iter().map(move |span| Received {
                    service,
                    scope,
                    span,
                })
            })
        })
        .collect()
}

/// `service/name` of every span in `data`, sorted.
pub(crate) fn names(data: &TracesData) -> Vec<String> {
    let mut names: Vec<String> = received(data)
        .iter()
        .map(|r| format!("{}/{}", r.service, r.span.name))
        .collect();
    names.sort();
    names
}

/// The value of attribute `key`.
pub(crate) fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()
}

/// A `reqwest` client that ignores proxy settings.
pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("build a reqwest client")
}
