//! Malformed requests get an error — a gRPC status, or HTTP 400/415 with a `google.rpc.Status` body naming
//! the problem — and the receiver keeps serving the next valid export.

use bytes::{Buf as _, BufMut as _};
use opentelemetry::trace::Tracer as _;
use otlp_receiver::{Query, Receiver, RunningReceiver};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use super::{Tracing, Transport, http, names};

/// Field 1 (`resource_spans`), length-delimited, 16 bytes long — but only one byte follows.
const TRUNCATED: &[u8] = &[0x0a, 0x10, 0x01];

/// Sends and receives raw bytes, to put anything at all on the wire.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

async fn raw_grpc(receiver: &RunningReceiver, path: &'static str, body: &[u8]) -> tonic::Code {
    let channel = Channel::from_shared(receiver.grpc_endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect over HTTP/2");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    match grpc
        .unary(
            tonic::Request::new(body.to_vec()),
            PathAndQuery::from_static(path),
            Raw,
        )
        .await
    {
        Ok(_) => tonic::Code::Ok,
        Err(status) => {
            assert!(
                status.message().contains("decode"),
                "the status says what went wrong: {status:?}"
            );
            status.code()
        }
    }
}

/// A valid export still goes through and is kept.
async fn still_serves(receiver: &RunningReceiver, transport: Transport) {
    let service = format!("after-{transport:?}");
    let tracing = Tracing::new(receiver.addresses(), transport, &service);
    drop(tracing.tracer().start("valid"));
    tracing.flush().await;
    let data = receiver
        .client()
        .traces(&Query::new().service_name(&service))
        .await
        .expect("query");
    assert_eq!(names(&data), [format!("{service}/valid")]);
    tracing.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_garbage_is_a_grpc_error() {
    let receiver = Receiver::start_local().await.expect("start the receiver");
    for path in [
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    ] {
        let code = raw_grpc(&receiver, path, TRUNCATED).await;
        assert_ne!(code, tonic::Code::Ok, "{path} accepted garbage");
        // An empty message is a valid (empty) export.
        assert_eq!(
            raw_grpc(&receiver, path, &[]).await,
            tonic::Code::Ok,
            "{path}"
        );
    }
    still_serves(&receiver, Transport::Grpc).await;
    let stats = receiver.client().stats().await.expect("stats");
    assert_eq!(
        (stats.trace_exports, stats.log_exports, stats.metric_exports),
        (2, 1, 1)
    );
    receiver.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_name_the_problem() {
    let receiver = Receiver::start_local().await.expect("start the receiver");
    for case in [
        Case::new("/v1/traces", Some("application/x-protobuf"), TRUNCATED)
            .answers(400, "malformed protobuf ExportTraceServiceRequest"),
        Case::new("/v1/traces", Some("application/json"), b"{not json")
            .answers(400, "malformed OTLP/JSON ExportTraceServiceRequest"),
        Case::new(
            "/v1/traces",
            Some("application/json"),
            br#"{"resourceSpans": 5}"#,
        )
        .answers(400, "invalid type"),
        Case::new(
            "/v1/traces",
            Some("application/json"),
            br#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}"#,
        )
        .answers(400, "malformed OTLP/JSON"),
        Case::new("/v1/traces", Some("text/plain"), b"hello")
            .answers(415, "unsupported content-type \"text/plain\""),
        Case::new("/v1/traces", None, b"hello").answers(415, "unsupported content-type (none)"),
        Case::new("/v1/logs", Some("application/x-protobuf"), TRUNCATED)
            .answers(400, "malformed protobuf ExportLogsServiceRequest"),
        Case::new("/v1/metrics", Some("application/json"), b"[]").answers(
            400,
            "malformed OTLP/JSON ExportMetricsServiceRequest: expected a JSON object",
        ),
        Case::new("/v1/nothing", Some("application/json"), b"{}")
            .answers(404, "no route for POST /v1/nothing"),
    ] {
        case.check(&receiver).await;
    }
    // A body that says gzip and is not; an encoding OTLP/HTTP does not define.
    for (encoding, body, status, message) in [
        (
            "gzip",
            &b"plain"[..],
            400,
            "malformed gzip body of ExportTraceServiceRequest",
        ),
        ("br", &b""[..], 415, "unsupported content-encoding \"br\""),
    ] {
        let response = http()
            .post(format!("{}/v1/traces", receiver.http_endpoint()))
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", encoding)
            .body(body.to_vec())
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status().as_u16(), status, "{encoding}");
        let status = status_of(response).await;
        assert!(status.message.contains(message), "{encoding}: {status:?}");
    }

    still_serves(&receiver, Transport::HttpProtobuf).await;
    still_serves(&receiver, Transport::HttpJson).await;
    let stats = receiver.client().stats().await.expect("stats");
    assert_eq!(
        stats.trace_exports, 2,
        "rejected requests are not exports: {stats:?}"
    );
    assert_eq!(stats.spans, 2);
    receiver.shutdown().await.expect("clean shutdown");
}

/// One malformed request and the answer it must get.
struct Case {
    path: &'static str,
    content_type: Option<&'static str>,
    body: &'static [u8],
    status: u16,
    message: &'static str,
}

impl Case {
    fn new(path: &'static str, content_type: Option<&'static str>, body: &'static [u8]) -> Self {
        Self {
            path,
            content_type,
            body,
            status: 0,
            message: "",
        }
    }

    fn answers(self, status: u16, message: &'static str) -> Self {
        Self {
            status,
            message,
            ..self
        }
    }

    async fn check(&self, receiver: &RunningReceiver) {
        let Self {
            path,
            content_type,
            body,
            status,
            message,
        } = *self;
        let mut request = http()
            .post(format!("{}{path}", receiver.http_endpoint()))
            .body(body.to_vec());
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = request.send().await.expect("POST");
        let case = format!(
            "POST {path} ({content_type:?}) {:?}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(response.status().as_u16(), status, "{case}");
        let error = if path == "/v1/nothing" {
            // Not an export: the query API's own error body.
            let error: serde_json::Value = response.json().await.expect("a JSON error body");
            error["error"].as_str().unwrap_or_default().to_owned()
        } else {
            // An export's error is a google.rpc.Status in the request's encoding.
            let wanted = if content_type == Some("application/x-protobuf") {
                "application/x-protobuf"
            } else {
                "application/json"
            };
            let got = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            assert_eq!(got, wanted, "{case}: the Status's encoding");
            let status = status_of(response).await;
            assert_eq!(status.code, 3, "{case}: INVALID_ARGUMENT: {status:?}");
            status.message
        };
        assert!(
            error.contains(message),
            "{case}: {error:?} should mention {message:?}"
        );
    }
}

/// The `google.rpc.Status` of an OTLP/HTTP error answer, protobuf or JSON.
async fn status_of(response: reqwest::Response) -> tonic_types::Status {
    let protobuf = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes() == b"application/x-protobuf");
    let body = response.bytes().await.expect("the error body");
    if protobuf {
        prost::Message::decode(body).expect("a protobuf google.rpc.Status")
    } else {
        let json: serde_json::Value = serde_json::from_slice(&body).expect("a JSON Status");
        assert!(json["details"].is_array(), "{json}");
        tonic_types::Status {
            code: json["code"]
                .as_i64()
                .and_then(|c| i32::try_from(c).ok())
                .expect("a code"),
            message: json["message"].as_str().expect("a message").to_owned(),
            details: Vec::new(),
        }
    }
}
