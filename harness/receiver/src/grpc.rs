//! OTLP/gRPC: the `TraceService` that keeps every export, and `LogsService` and
//! `MetricsService` that accept and count theirs.
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
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::{Request, Response, Status};

use super::MAX_MESSAGE_BYTES;
use super::store::Store;

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
        admit(&self.0).await?;
        self.0.ingest_traces(request.into_inner().resource_spans);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Otlp {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        admit(&self.0).await?;
        self.0.ingest_logs(log_records(&request.into_inner()));
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Otlp {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        admit(&self.0).await?;
        self.0.ingest_metrics(metrics(&request.into_inner()));
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Number of log records in an export.
pub(crate) fn log_records(request: &ExportLogsServiceRequest) -> usize {
    request
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum()
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
    tonic::transport::Server::builder()
        .add_service(
            TraceServiceServer::new(otlp.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            LogsServiceServer::new(otlp.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(MetricsServiceServer::new(otlp).max_decoding_message_size(MAX_MESSAGE_BYTES))
}
