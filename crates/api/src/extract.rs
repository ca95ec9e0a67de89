//! Request extractors whose rejections are JSON errors that say what was wrong.
//!
//! - [`Json`]: like axum's, but a body that is not valid JSON, misses a field or has a wrong
//!   type is a 400 naming it; a body over the limit stays 413, a missing
//!   `Content-Type: application/json` stays 415, a body that does not arrive within
//!   `HTTP_BODY_TIMEOUT_MS` is a 408.
//! - [`UserId`]: the caller — the `sub` of a verified bearer token ([`crate::auth`]), or, only
//!   in `AUTH_MODE=header`, the `x-user-id` header (default `anonymous`); checked so it is
//!   safe in paths. Any failure is a 401 that says why, before the body is read.
//! - [`PathRunId`]: a `{run_id}` path segment that must be a UUID.

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use common::RunId;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The most a request body may be.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// A JSON body with clear rejections.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => {
                use axum::extract::rejection::JsonRejection::*;
                let (status, msg) = match &rejection {
                    JsonDataError(e) => (
                        StatusCode::BAD_REQUEST,
                        format!("invalid request body: {}", source_text(e)),
                    ),
                    JsonSyntaxError(e) => (
                        StatusCode::BAD_REQUEST,
                        format!("malformed JSON body: {}", source_text(e)),
                    ),
                    MissingJsonContentType(_) => (
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "expected Content-Type: application/json".to_owned(),
                    ),
                    other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("request body is larger than {BODY_LIMIT} bytes"),
                    ),
                    // The body deadline (`HTTP_BODY_TIMEOUT_MS`) passed while reading it.
                    other if is_timeout(other) => (
                        StatusCode::REQUEST_TIMEOUT,
                        "the request body did not arrive within HTTP_BODY_TIMEOUT_MS".to_owned(),
                    ),
                    other => (other.status(), other.body_text()),
                };
                Err(ApiError::new(status, msg))
            }
        }
    }
}

/// Whether reading the body failed because its deadline passed.
fn is_timeout(rejection: &axum::extract::rejection::JsonRejection) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(e) = source {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The body of `POST /runs`: a [`Json`] value checked strictly — an unknown top-level field
/// is a 400 naming it (messages between the services are lenient, the HTTP contract is not).
pub struct RunRequestBody(pub common::RunRequest);

impl<S: Send + Sync> FromRequest<S> for RunRequestBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<serde_json::Value>::from_request(req, state).await?;
        if let Some(field) = common::RunRequest::unknown_field(&value) {
            return Err(ApiError::bad_request(format!(
                "invalid request body: unknown field `{field}`, expected one of {}",
                common::RunRequest::FIELDS
                    .map(|f| format!("`{f}`"))
                    .join(", ")
            )));
        }
        serde_path_to_error::deserialize(value)
            .map(Self)
            .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
    }
}

/// The innermost error message (serde's, with the field path), not axum's preamble.
fn source_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner: &dyn std::error::Error = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

/// The caller's user id.
#[derive(Debug, Clone)]
pub struct UserId(pub String);

/// The header naming the user.
pub const USER_HEADER: &str = "x-user-id";

impl FromRequestParts<crate::AppState> for UserId {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &crate::AppState,
    ) -> Result<Self, Self::Rejection> {
        match state.auth.as_ref() {
            crate::auth::Auth::TrustHeader => {
                let Some(value) = parts.headers.get(USER_HEADER) else {
                    return Ok(Self("anonymous".to_owned()));
                };
                let text = value.to_str().map_err(|_| {
                    ApiError::bad_request(format!("{USER_HEADER}: must be visible ASCII"))
                })?;
                check_user_id(text)
                    .map_err(|m| ApiError::bad_request(format!("{USER_HEADER}: {m}")))?;
                Ok(Self(text.to_owned()))
            }
            crate::auth::Auth::Jwt(verifier) => {
                let verified = bearer(parts)
                    .and_then(|token| verifier.verify(token).map_err(|e| e.0))
                    .map(|claims| Self(claims.sub));
                verified.map_err(|reason| {
                    // On the HTTP server span: why, never the token.
                    telemetry::tracing::Span::current().record("error", reason.as_str());
                    ApiError::unauthorized(reason)
                })
            }
        }
    }
}

/// HTTP authentication scheme names (IANA's registry) a refusal may name.
const KNOWN_SCHEMES: [&str; 10] = [
    "Basic",
    "Digest",
    "Negotiate",
    "NTLM",
    "HOBA",
    "Mutual",
    "OAuth",
    "SCRAM-SHA-1",
    "SCRAM-SHA-256",
    "vapid",
];

/// The token of `Authorization: Bearer <token>`, or why there is none. No reason quotes what
/// was sent.
fn bearer(parts: &Parts) -> Result<&str, String> {
    let mut values = parts
        .headers
        .get_all(axum::http::header::AUTHORIZATION)
        .iter();
    let Some(value) = values.next() else {
        return Err(
            "missing Authorization header: send 'Authorization: Bearer <token>'".to_owned(),
        );
    };
    if values.next().is_some() {
        return Err("more than one Authorization header".to_owned());
    }
    let text = value
        .to_str()
        .map_err(|_| "the Authorization header must be visible ASCII".to_owned())?;
    let (scheme, token) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        // The reason lands in the 401 body, the span's `error` and the log: never a piece of
        // what was sent, which may be a credential (a bare token, `Basic <password>`). Only a
        // registered scheme name is named.
        return Err(match KNOWN_SCHEMES
            .iter()
            .find(|s| s.eq_ignore_ascii_case(scheme))
        {
            Some(known) => format!("the Authorization scheme must be Bearer, not {known}"),
            None => "the Authorization header must be 'Bearer <token>' (what was sent is not shown: it may be a credential)".to_owned(),
        });
    }
    let token = token.trim();
    if token.is_empty() {
        return Err("the bearer token is empty".to_owned());
    }
    Ok(token)
}

/// A user id is 1–128 of `A-Z a-z 0-9 . _ @ - | + :` (what identity providers put in `sub`,
/// such as `auth0|5f7c…` or `google-oauth2|1234`), and not `.` or `..`: it becomes a path part
/// and, escaped, an index subject.
pub fn check_user_id(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 128 {
        return Err("must be 1 to 128 characters".to_owned());
    }
    if s == "." || s == ".." {
        return Err(format!("'{s}' is not a valid user id"));
    }
    if let Some(c) = s.chars().find(|c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-' | '|' | '+' | ':'))
    }) {
        return Err(format!(
            "character '{c}' is not allowed (use letters, digits, '.', '_', '@', '-', '|', '+', ':')"
        ));
    }
    Ok(())
}

/// A `{run_id}` path parameter.
pub struct PathRunId(pub RunId);

impl<S: Send + Sync> FromRequestParts<S> for PathRunId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        raw.parse::<RunId>()
            .map(Self)
            .map_err(|_| ApiError::not_found(format!("run not found: {raw}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a hostile or careless client sends: none of it may come back in the reason (the
    /// 401 body, the span's `error`, the log line).
    #[test]
    fn a_malformed_authorization_header_is_never_quoted() {
        let secret = "s3cr3tPa55w0rdXYZ";
        let shapes = test_support::metis::malformed_authorizations(secret);
        for shape in &shapes {
            let req = axum::http::Request::builder()
                .header(axum::http::header::AUTHORIZATION, shape.as_str())
                .body(())
                .unwrap();
            let (parts, ()) = req.into_parts();
            match bearer(&parts) {
                // A well-formed Bearer header passes its token on to verification.
                Ok(token) => assert!(
                    shape.to_lowercase().starts_with("bearer "),
                    "{shape}: {token}"
                ),
                Err(reason) => {
                    for piece in [secret, "s3cr3t", "XYZ"] {
                        assert!(!reason.contains(piece), "{shape:?} → {reason}");
                    }
                }
            }
        }
    }

    #[test]
    fn user_ids() {
        for ok in [
            "alice",
            "bob@example.org",
            "a.b-c_d",
            "x",
            "auth0|5f7c8ec7c33c6c004bbafe82",
            "a+b@x.org",
            "urn:idp:1",
        ] {
            assert!(check_user_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "..", ".", "a/b", "a b", "ü", &"x".repeat(129)] {
            assert!(check_user_id(bad).is_err(), "{bad}");
        }
    }
}
