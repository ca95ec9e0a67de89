//! What the OTLP specification asks of a server beyond decoding: gzip request bodies,
//! `google.rpc.Status` error bodies on OTLP/HTTP, and `partial_success` for spans it refuses.
//!
//! - **Compression.** OTLP/HTTP bodies may be `Content-Encoding: gzip` ([`gunzip`], bounded
//!   by [`MAX_MESSAGE_BYTES`](crate::MAX_MESSAGE_BYTES) after decompression); gRPC accepts
//!   gzip-compressed messages (tonic's `accept_compressed`, in `grpc`).
//! - **Errors.** A refused OTLP/HTTP export is answered with a `google.rpc.Status` in the
//!   request's encoding ([`status_body`]): protobuf for protobuf requests, JSON otherwise.
//! - **Partial success.** A span whose trace id is not 16 bytes (or all zero), whose span id
//!   is not 8 bytes (or all zero), or whose parent span id is neither empty nor 8 bytes is
//!   not kept; the answer's `partial_success` counts them and names the first
//!   ([`reject_invalid_spans`]).

use std::io::Read;

use axum::http::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};

/// Why a gzip body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum GunzipError {
    /// Not gzip, or cut short.
    Corrupt(String),
    /// Larger than the limit once decompressed.
    TooLarge(usize),
}

/// Decompresses a gzip body, refusing one that grows past `limit` bytes.
pub(crate) fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, GunzipError> {
    let mut out = Vec::new();
    let decoder = flate2::read::GzDecoder::new(body);
    // One byte over the limit is enough to know it is too large; nothing more is inflated.
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| GunzipError::Corrupt(e.to_string()))?;
    if out.len() > limit {
        return Err(GunzipError::TooLarge(limit));
    }
    Ok(out)
}

/// The gRPC status code (`google.rpc.Code`) an OTLP/HTTP status stands for.
pub(crate) fn grpc_code(status: StatusCode) -> i32 {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => 3, // INVALID_ARGUMENT
        StatusCode::NOT_FOUND => 5,                                        // NOT_FOUND
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => 8, // RESOURCE_EXHAUSTED
        StatusCode::SERVICE_UNAVAILABLE => 14,                             // UNAVAILABLE
        s if s.is_client_error() => 3,
        _ => 13, // INTERNAL
    }
}

/// A `google.rpc.Status` for `status` and `message`: protobuf bytes when `protobuf`, else its
/// proto3 JSON form.
pub(crate) fn status_body(protobuf: bool, status: StatusCode, message: &str) -> Vec<u8> {
    let code = grpc_code(status);
    if protobuf {
        prost::Message::encode_to_vec(&tonic_types::Status {
            code,
            message: message.to_owned(),
            details: Vec::new(),
        })
    } else {
        serde_json::to_vec(&serde_json::json!({ "code": code, "message": message, "details": [] }))
            .unwrap_or_default()
    }
}

/// What is wrong with a span's ids, if anything.
fn invalid_ids(span: &Span) -> Option<&'static str> {
    let zero = |b: &[u8]| b.iter().all(|&x| x == 0);
    if span.trace_id.len() != 16 || zero(&span.trace_id) {
        Some("trace_id must be 16 bytes, not all zero")
    } else if span.span_id.len() != 8 || zero(&span.span_id) {
        Some("span_id must be 8 bytes, not all zero")
    } else if !span.parent_span_id.is_empty() && span.parent_span_id.len() != 8 {
        Some("parent_span_id must be empty or 8 bytes")
    } else {
        None
    }
}

/// Removes the spans with invalid ids (see the module docs). Returns how many were removed
/// and a message naming the first, or `None` when every span is kept.
pub(crate) fn reject_invalid_spans(resource_spans: &mut [ResourceSpans]) -> Option<(i64, String)> {
    let mut rejected = 0_i64;
    let mut first = None;
    for rs in resource_spans.iter_mut() {
        for ss in &mut rs.scope_spans {
            ss.spans.retain(|span| match invalid_ids(span) {
                None => true,
                Some(why) => {
                    rejected += 1;
                    first.get_or_insert_with(|| format!("span {:?}: {why}", span.name));
                    false
                }
            });
        }
    }
    first.map(|first| {
        let msg = if rejected == 1 {
            format!("1 span rejected: {first}")
        } else {
            format!("{rejected} spans rejected; the first: {first}")
        };
        (rejected, msg)
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use opentelemetry_proto::tonic::trace::v1::ScopeSpans;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn gunzip_round_trips_and_bounds_the_output() {
        let data = vec![b'x'; 10_000];
        assert_eq!(gunzip(&gzip(&data), 10_000).unwrap(), data);
        // A small body that inflates past the limit is refused without inflating it all.
        assert_eq!(
            gunzip(&gzip(&data), 9_999),
            Err(GunzipError::TooLarge(9_999))
        );
        assert!(matches!(
            gunzip(b"not gzip", 100),
            Err(GunzipError::Corrupt(_))
        ));
        let cut = gzip(&data);
        assert!(matches!(
            gunzip(&cut[..cut.len() / 2], 100_000),
            Err(GunzipError::Corrupt(_))
        ));
    }

    #[test]
    fn status_bodies_in_both_encodings() {
        let pb = status_body(true, StatusCode::BAD_REQUEST, "bad");
        let decoded: tonic_types::Status = prost::Message::decode(pb.as_slice()).unwrap();
        assert_eq!((decoded.code, decoded.message.as_str()), (3, "bad"));
        let json: serde_json::Value =
            serde_json::from_slice(&status_body(false, StatusCode::SERVICE_UNAVAILABLE, "down"))
                .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"code": 14, "message": "down", "details": []})
        );
        assert_eq!(grpc_code(StatusCode::TOO_MANY_REQUESTS), 8);
    }

    #[test]
    fn invalid_ids_are_rejected_and_counted() {
        let span = |name: &str, trace: Vec<u8>, id: Vec<u8>, parent: Vec<u8>| Span {
            name: name.to_owned(),
            trace_id: trace,
            span_id: id,
            parent_span_id: parent,
            ..Span::default()
        };
        let mut rs = vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    span("ok", vec![1; 16], vec![2; 8], vec![]),
                    span("zero trace", vec![0; 16], vec![2; 8], vec![]),
                    span("short id", vec![1; 16], vec![2; 4], vec![]),
                    span("bad parent", vec![1; 16], vec![2; 8], vec![3; 3]),
                    span("child", vec![1; 16], vec![4; 8], vec![2; 8]),
                ],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }];
        let (n, msg) = reject_invalid_spans(&mut rs).unwrap();
        assert_eq!(n, 3);
        assert!(
            msg.contains("\"zero trace\"") && msg.contains("trace_id"),
            "{msg}"
        );
        let kept: Vec<&str> = rs[0].scope_spans[0]
            .spans
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(kept, ["ok", "child"]);
        assert_eq!(reject_invalid_spans(&mut rs), None);
    }
}
