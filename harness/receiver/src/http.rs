//! The HTTP port: OTLP/HTTP ingest and the query API.
//!
//! | Route | What |
//! |---|---|
//! | `POST /v1/traces`, `/v1/logs`, `/v1/metrics` | OTLP/HTTP export, `application/x-protobuf` or `application/json`, plain or `Content-Encoding: gzip` |
//! | `GET /v1/traces?…` | kept spans as OTLP/JSON `TracesData`, filtered, optionally after a wait ([`Query`]) |
//! | `DELETE /v1/traces` | forget every kept span |
//! | `GET /v1/logs?…` | kept log records as OTLP/JSON `LogsData`, filtered, optionally after a wait ([`LogQuery`](crate::LogQuery)) |
//! | `DELETE /v1/logs` | forget every kept log record |
//! | `GET /v1/stats` | [`Stats`](super::Stats) as JSON |
//! | `GET /healthz` | `ok` |
//!
//! A refused export is answered as the OTLP specification says: a `google.rpc.Status` body in
//! the request's encoding (protobuf for protobuf, JSON otherwise) — 400 for a malformed body,
//! 413 for one over the size limit once decompressed, 415 for a content type or encoding
//! OTLP/HTTP does not define, 503/429 from the fault mode. The query API's errors are JSON
//! `{"error": "..."}`: 400 for a malformed query, 503 for a wait cut short by shutdown.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query as UrlQuery, State};
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::query::{self, Filter, Outcome, Query};
use super::store::Store;
use super::{MAX_MESSAGE_BYTES, SPAN_COUNT_HEADER, WAIT_HEADER};

#[derive(Debug, Clone)]
struct AppState {
    store: Arc<Store>,
    shutdown: watch::Receiver<bool>,
}

/// The axum router for the HTTP port.
pub(crate) fn router(store: Arc<Store>, shutdown: watch::Receiver<bool>) -> Router {
    Router::new()
        .route(
            "/v1/traces",
            post(post_traces).get(get_traces).delete(delete_traces),
        )
        .route(
            "/v1/logs",
            post(post_logs).get(get_logs).delete(delete_logs),
        )
        .route("/v1/metrics", post(post_metrics))
        .route("/v1/stats", get(stats))
        .route(
            "/v1/faults",
            get(get_faults).put(put_faults).delete(delete_faults),
        )
        .route("/healthz", get(|| async { "ok" }))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_MESSAGE_BYTES))
        .with_state(AppState { store, shutdown })
}

/// An error answer: `{"error": message}` with `status` (and `Retry-After` when set); for an
/// OTLP export, a `google.rpc.Status` instead (`otlp`: protobuf or JSON).
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
    otlp: Option<Encoding>,
}

/// Applies the fault mode to one export (see [`crate::fault`]).
async fn admit(store: &Store) -> Result<(), ApiError> {
    let (delay, refusal) = store.faults.take();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await; // the configured fault, not synchronisation
    }
    match refusal {
        None => Ok(()),
        Some((crate::fault::Refusal::Unavailable, _)) => Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "refused by the receiver's fault mode (503)".to_owned(),
            retry_after: None,
            otlp: None,
        }),
        Some((crate::fault::Refusal::Throttled, secs)) => Err(ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "throttled by the receiver's fault mode (429)".to_owned(),
            retry_after: Some(secs),
            otlp: None,
        }),
    }
}

async fn get_faults(State(state): State<AppState>) -> Json<crate::fault::FaultStatus> {
    Json(state.store.faults.status())
}

async fn put_faults(
    State(state): State<AppState>,
    body: Result<Json<crate::fault::FaultMode>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<crate::fault::FaultStatus>, ApiError> {
    let Json(mode) =
        body.map_err(|e| ApiError::bad_request(format!("fault mode: {}", e.body_text())))?;
    state.store.faults.set(mode);
    Ok(Json(state.store.faults.status()))
}

async fn delete_faults(State(state): State<AppState>) -> StatusCode {
    state.store.faults.set(crate::fault::FaultMode::default());
    StatusCode::NO_CONTENT
}

impl ApiError {
    /// The same error, answered as an OTLP export's: a `google.rpc.Status` in the encoding
    /// the request's content type names (JSON when it names none OTLP knows).
    fn for_export(mut self, headers: &HeaderMap) -> Self {
        self.otlp = Some(encoding(headers).unwrap_or(Encoding::Json));
        self
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            retry_after: None,
            otlp: None,
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        Self {
            status: rejection.status(),
            message: format!("could not read the request body: {}", rejection.body_text()),
            retry_after: None,
            otlp: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        tracing::warn!(status = %self.status, "rejected: {}", self.message);
        let mut response = match self.otlp {
            None => (
                self.status,
                Json(serde_json::json!({ "error": self.message })),
            )
                .into_response(),
            Some(encoding) => {
                let protobuf = matches!(encoding, Encoding::Protobuf);
                let body = crate::conform::status_body(protobuf, self.status, &self.message);
                let content_type = if protobuf { PROTOBUF } else { JSON };
                (self.status, [(CONTENT_TYPE, content_type)], body).into_response()
            }
        };
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        retry_after: None,
        otlp: None,
        message: format!("no route for {method} {uri}"),
    }
}

/// The two OTLP/HTTP encodings.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    Protobuf,
    Json,
}

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

fn unsupported(message: String) -> ApiError {
    ApiError {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        message,
        retry_after: None,
        otlp: None,
    }
}

/// Whether the body is gzip-compressed (`Content-Encoding: gzip`); identity or none is plain,
/// anything else is refused with 415.
fn gzipped(headers: &HeaderMap) -> Result<bool, ApiError> {
    match headers.get(CONTENT_ENCODING).map(HeaderValue::as_bytes) {
        None => Ok(false),
        Some(ce) if ce.eq_ignore_ascii_case(b"identity") => Ok(false),
        Some(ce) if ce.eq_ignore_ascii_case(b"gzip") => Ok(true),
        Some(ce) => Err(unsupported(format!(
            "unsupported content-encoding {:?}; OTLP/HTTP takes gzip or identity",
            String::from_utf8_lossy(ce)
        ))),
    }
}

fn encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let content_type = headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes);
    let mime = content_type
        .and_then(|ct| ct.split(|&b| b == b';').next())
        .map(<[u8]>::trim_ascii);
    match mime {
        Some(m) if m.eq_ignore_ascii_case(PROTOBUF.as_bytes()) => Ok(Encoding::Protobuf),
        Some(m) if m.eq_ignore_ascii_case(JSON.as_bytes()) => Ok(Encoding::Json),
        _ => Err(unsupported(format!(
            "unsupported content-type {}; OTLP/HTTP takes {PROTOBUF} or {JSON}",
            content_type.map_or_else(
                || "(none)".to_owned(),
                |ct| format!("{:?}", String::from_utf8_lossy(ct))
            ),
        ))),
    }
}

/// Decodes an OTLP/HTTP request body; `what` names the message in errors.
fn decode<T>(
    store: &Store,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    what: &str,
) -> Result<(Encoding, T), ApiError>
where
    T: prost::Message + Default + DeserializeOwned,
{
    let encoding = encoding(headers)?;
    let compressed = gzipped(headers)?;
    let body = body?;
    let body = if compressed {
        store.count_compressed();
        use crate::conform::GunzipError;
        Bytes::from(
            crate::conform::gunzip(&body, MAX_MESSAGE_BYTES).map_err(|e| match e {
                GunzipError::Corrupt(why) => {
                    ApiError::bad_request(format!("malformed gzip body of {what}: {why}"))
                }
                GunzipError::TooLarge(limit) => ApiError {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    message: format!("{what} is over {limit} bytes once decompressed"),
                    retry_after: None,
                    otlp: None,
                },
            })?,
        )
    } else {
        body
    };
    let message = match encoding {
        Encoding::Protobuf => T::decode(body)
            .map_err(|e| ApiError::bad_request(format!("malformed protobuf {what}: {e}")))?,
        Encoding::Json => {
            // serde would also read a struct from a JSON array; OTLP/JSON is an object.
            if body.trim_ascii_start().first() != Some(&b'{') {
                return Err(ApiError::bad_request(format!(
                    "malformed OTLP/JSON {what}: expected a JSON object"
                )));
            }
            serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("malformed OTLP/JSON {what}: {e}")))?
        }
    };
    Ok((encoding, message))
}

/// Answers an export in the encoding it came in.
fn respond<T: prost::Message + Serialize>(encoding: Encoding, message: &T) -> Response {
    match encoding {
        Encoding::Protobuf => ([(CONTENT_TYPE, PROTOBUF)], message.encode_to_vec()).into_response(),
        Encoding::Json => Json(message).into_response(),
    }
}

async fn post_traces(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (encoding, request): (_, ExportTraceServiceRequest) =
        decode(&state.store, &headers, body, "ExportTraceServiceRequest")
            .map_err(|e| e.for_export(&headers))?;
    admit(&state.store)
        .await
        .map_err(|e| e.for_export(&headers))?;
    let mut resource_spans = request.resource_spans;
    let rejected = crate::conform::reject_invalid_spans(&mut resource_spans);
    state.store.ingest_traces(resource_spans);
    Ok(respond(
        encoding,
        &super::grpc::trace_response(&state.store, rejected),
    ))
}

async fn post_logs(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (encoding, request): (_, ExportLogsServiceRequest) =
        decode(&state.store, &headers, body, "ExportLogsServiceRequest")
            .map_err(|e| e.for_export(&headers))?;
    admit(&state.store)
        .await
        .map_err(|e| e.for_export(&headers))?;
    state.store.ingest_logs(request.resource_logs);
    Ok(respond(encoding, &ExportLogsServiceResponse::default()))
}

async fn post_metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (encoding, request): (_, ExportMetricsServiceRequest) =
        decode(&state.store, &headers, body, "ExportMetricsServiceRequest")
            .map_err(|e| e.for_export(&headers))?;
    admit(&state.store)
        .await
        .map_err(|e| e.for_export(&headers))?;
    state.store.ingest_metrics(super::grpc::metrics(&request));
    Ok(respond(encoding, &ExportMetricsServiceResponse::default()))
}

async fn get_traces(
    State(state): State<AppState>,
    query: Result<UrlQuery<Query>, QueryRejection>,
) -> Result<Response, ApiError> {
    let UrlQuery(query) = query
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))?;
    let filter = Filter::new(&query).map_err(ApiError::bad_request)?;
    let waited = query::wait(&state.store, &filter, &query, state.shutdown.clone()).await;
    let wait = match waited.outcome {
        Outcome::Ok => "ok",
        Outcome::TimedOut => "timeout",
        Outcome::ShuttingDown => {
            return Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                retry_after: None,
                otlp: None,
                message: "the receiver is shutting down".to_owned(),
            });
        }
    };
    let data = filter.select(&waited.batches);
    let body = serde_json::to_vec(&data).map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        retry_after: None,
        otlp: None,
        message: format!("could not encode TracesData as OTLP/JSON: {e}"),
    })?;
    Ok((
        [
            (CONTENT_TYPE, HeaderValue::from_static(JSON)),
            (
                HeaderName::from_static(WAIT_HEADER),
                HeaderValue::from_static(wait),
            ),
            (
                HeaderName::from_static(SPAN_COUNT_HEADER),
                HeaderValue::from(waited.matched),
            ),
        ],
        body,
    )
        .into_response())
}

async fn get_logs(
    State(state): State<AppState>,
    query: Result<UrlQuery<crate::LogQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let UrlQuery(query) = query
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))?;
    let found = crate::logs::wait(&state.store, &query)
        .await
        .map_err(ApiError::bad_request)?;
    let body = serde_json::to_vec(&found.data).map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        retry_after: None,
        otlp: None,
        message: format!("could not encode LogsData as OTLP/JSON: {e}"),
    })?;
    Ok((
        [
            (CONTENT_TYPE, HeaderValue::from_static(JSON)),
            (
                HeaderName::from_static(WAIT_HEADER),
                HeaderValue::from_static(if found.held { "ok" } else { "timeout" }),
            ),
            (
                HeaderName::from_static(super::LOG_COUNT_HEADER),
                HeaderValue::from(found.matched),
            ),
        ],
        body,
    )
        .into_response())
}

async fn delete_logs(State(state): State<AppState>) -> StatusCode {
    state.store.clear_logs();
    StatusCode::NO_CONTENT
}

async fn delete_traces(State(state): State<AppState>) -> StatusCode {
    state.store.clear();
    StatusCode::NO_CONTENT
}

async fn stats(State(state): State<AppState>) -> Json<super::Stats> {
    Json(state.store.stats())
}
