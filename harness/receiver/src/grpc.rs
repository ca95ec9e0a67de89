//! OTLP/gRPC: the `TraceService` and `LogsService` that keep every export, and the
//! `MetricsService` that accepts and counts its own. Every service accepts gzip-compressed
//! messages (and answers compressed when the client accepts it); spans with invalid ids are
//! refused with `partial_success` (see [`crate::conform`]).
//!
//! Malformed messages never reach these services: tonic answers them with a gRPC error
//! status on its own and the server keeps serving.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::MAX_MESSAGE_BYTES;
use super::store::Store;

/// Counts an export whose message came gzip-compressed (tonic has inflated it already).
fn note_encoding<T>(store: &Store, request: &Request<T>) {
    if request
        .metadata()
        .get("grpc-encoding")
        .is_some_and(|e| e.as_bytes() == b"gzip")
    {
        store.count_compressed();
    }
}

/// Applies the fault mode to one export: waits its delay, then refuses it if a refusal is left.
async fn admit(store: &Store) -> Result<(), Status> {
    let (delay, refusal) = store.faults.take();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await; // the configured fault, not synchronisation
    }
    match refusal {
        None => Ok(()),
        Some((crate::fault::Refusal::Unavailable, _)) => Err(Status::unavailable(
            "refused by the receiver's fault mode (UNAVAILABLE)",
        )),
        Some((crate::fault::Refusal::Throttled, secs)) => {
            use tonic_types::{ErrorDetails, StatusExt};
            Err(Status::with_error_details(
                tonic::Code::ResourceExhausted,
                "throttled by the receiver's fault mode",
                ErrorDetails::with_retry_info(Some(std::time::Duration::from_secs(secs))),
            ))
        }
    }
}

/// The three OTLP services over one store.
#[derive(Debug, Clone)]
pub(crate) struct Otlp(pub(crate) Arc<Store>);

#[tonic::async_trait]
impl TraceService for Otlp {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        note_encoding(&self.0, &request);
        admit(&self.0).await?;
        let mut resource_spans = request.into_inner().resource_spans;
        let rejected = crate::conform::reject_invalid_spans(&mut resource_spans);
        self.0.ingest_traces(resource_spans);
        Ok(Response::new(trace_response(&self.0, rejected)))
    }
}

#[tonic::async_trait]
impl LogsService for Otlp {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        note_encoding(&self.0, &request);
        admit(&self.0).await?;
        self.0.ingest_logs(request.into_inner().resource_logs);
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Otlp {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        note_encoding(&self.0, &request);
        admit(&self.0).await?;
        self.0.ingest_metrics(metrics(&request.into_inner()));
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// The answer to a trace export: `partial_success` set when spans were refused (counted in
/// the stats).
pub(crate) fn trace_response(
    store: &Store,
    rejected: Option<(i64, String)>,
) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: rejected.map(|(rejected_spans, error_message)| {
            store.count_rejected(rejected_spans);
            tracing::warn!(rejected_spans, "partial success: {error_message}");
            ExportTracePartialSuccess {
                rejected_spans,
                error_message,
            }
        }),
    }
}

/// Number of metrics in an export.
pub(crate) fn metrics(request: &ExportMetricsServiceRequest) -> usize {
    request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .map(|s| s.metrics.len())
        .sum()
}

/// A tonic router serving the three services.
pub(crate) fn router(store: Arc<Store>) -> tonic::transport::server::Router {
    let otlp = Otlp(store);
    let gzip = CompressionEncoding::Gzip;
    tonic::transport::Server::builder()
        .add_service(
            TraceServiceServer::new(otlp.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .accept_compressed(gzip)
                .send_compressed(gzip),
        )
        .add_service(
            LogsServiceServer::new(otlp.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .accept_compressed(gzip)
                .send_compressed(gzip),
        )
        .add_service(
            MetricsServiceServer::new(otlp)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .accept_compressed(gzip)
                .send_compressed(gzip),
        )
}
