//! The JSON error body `{"msg": "...", "status_code": N}` every failure is answered with.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use telemetry::tracing::{debug, error};
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, naming the field or resource.
    pub msg: String,
    /// The HTTP status code, repeated.
    pub status_code: u16,
    /// On a 429: the limit that was reached, and the caller's usage of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
}

/// A per-user limit and the caller's usage of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Quota {
    /// The setting that sets it, e.g. `MAX_UNFINISHED_RUNS_PER_USER`.
    pub limit_name: String,
    /// Its value.
    pub limit: u64,
    /// The caller's usage when the request came.
    pub usage: u64,
}

/// An error a handler returns.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Message for the client.
    pub msg: String,
    /// A 429's limit and usage.
    pub quota: Option<Quota>,
    /// A 429's `Retry-After`, in seconds.
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    /// Any status with a message.
    pub fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        Self {
            status,
            msg: msg.into(),
            quota: None,
            retry_after_s: None,
        }
    }
    /// 429: `quota` is reached; try again after `retry_after_s` seconds.
    pub fn too_many(msg: impl Into<String>, quota: Quota, retry_after_s: u64) -> Self {
        Self {
            quota: Some(quota),
            retry_after_s: Some(retry_after_s),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, msg)
        }
    }
    /// 400.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }
    /// 404.
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, msg)
    }
    /// 401, with a `WWW-Authenticate: Bearer` challenge.
    pub fn unauthorized(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, msg)
    }
    /// 409.
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, msg)
    }
    /// 503 for a NATS failure; the detail is logged, and told, since it is ours, not the client's.
    pub fn unavailable(e: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("storage unavailable: {e}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            error!(status = self.status.as_u16(), msg = %self.msg, "request failed");
        } else {
            // The client's mistake: not worth an INFO line (nor a span event) per bad request,
            // but visible with RUST_LOG=debug.
            debug!(status = self.status.as_u16(), msg = %self.msg, "request refused");
        }
        let challenge = (self.status == StatusCode::UNAUTHORIZED).then(|| {
            // RFC 6750: the reason, with quotes and control characters kept out of the header.
            let text: String = self
                .msg
                .chars()
                .map(|c| {
                    if c == '"' || c == '\\' || c.is_control() {
                        '\''
                    } else {
                        c
                    }
                })
                .collect();
            format!(r#"Bearer realm="metis", error="invalid_token", error_description="{text}""#)
        });
        let body = ErrorBody {
            msg: self.msg,
            status_code: self.status.as_u16(),
            quota: self.quota,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after_s {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        if let Some(value) = challenge.and_then(|c| axum::http::HeaderValue::from_str(&c).ok()) {
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

impl From<common::infra::InfraError> for ApiError {
    fn from(e: common::infra::InfraError) -> Self {
        Self::unavailable(e)
    }
}
