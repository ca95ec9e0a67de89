//! Hand-built OTLP input for the tree tests: a tiny span builder, realistic Metis spans with
//! the SDK noise tracing-opentelemetry adds, and deterministic shuffles of arrival order.

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, TracesData};

pub(crate) const API: &str = "metis-api";
pub(crate) const ENGINE: &str = "metis-engine-generic";

pub(crate) const SERVER: i32 = 2;
pub(crate) const PRODUCER: i32 = 4;
pub(crate) const CONSUMER: i32 = 5;

/// A value that becomes an OTLP `AnyValue`.
pub(crate) trait IntoAny {
    fn into_any(self) -> AnyValue;
}

impl IntoAny for &str {
    fn into_any(self) -> AnyValue {
        AnyValue {
            value: Some(any_value::Value::StringValue(self.to_owned())),
        }
    }
}

impl IntoAny for String {
    fn into_any(self) -> AnyValue {
        AnyValue {
            value: Some(any_value::Value::StringValue(self)),
        }
    }
}

impl IntoAny for i64 {
    fn into_any(self) -> AnyValue {
        AnyValue {
            value: Some(any_value::Value::IntValue(self)),
        }
    }
}

impl IntoAny for bool {
    fn into_any(self) -> AnyValue {
        AnyValue {
            value: Some(any_value::Value::BoolValue(self)),
        }
    }
}

impl IntoAny for f64 {
    fn into_any(self) -> AnyValue {
        AnyValue {
            value: Some(any_value::Value::DoubleValue(self)),
        }
    }
}

impl IntoAny for Vec<AnyValue> {
    fn into_any(self) -> AnyValue {
        AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue { values: self })),
        }
    }
}

pub(crate) fn kv(key: &str, value: impl IntoAny) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(value.into_any()),
        key_strindex: 0,
    }
}

/// Span id number `n` as 8 bytes that look random (hex with letters).
pub(crate) fn span_id(n: u64) -> Vec<u8> {
    n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes().to_vec()
}

/// Span id number `n` as the 16 hex digits an attribute such as `api_trace_id` carries.
pub(crate) fn span_hex(n: u64) -> String {
    span_id(n).iter().map(|b| format!("{b:02x}")).collect()
}

/// Trace id number `n` as 16 bytes.
pub(crate) fn trace_id(n: u64) -> Vec<u8> {
    let mut id = n.wrapping_mul(0xD1B5_4A32_D192_ED03).to_be_bytes().to_vec();
    id.extend(span_id(n + 1000));
    id
}

/// Trace id number `n` as 32 hex digits.
pub(crate) fn trace_hex(n: u64) -> String {
    trace_id(n).iter().map(|b| format!("{b:02x}")).collect()
}

/// One span being built; ids are small numbers mapped to random-looking bytes.
#[derive(Clone)]
pub(crate) struct S {
    service: String,
    /// The resource's `service.instance.id` (default: one per service name).
    instance: Option<String>,
    /// The instrumentation scope's name (default: the service name).
    scope: Option<String>,
    span: Span,
}

/// A span of `service` named `name` in trace 1 with id `id`, internal, closed (start = id ms,
/// end = start + 1 ms).
pub(crate) fn span(service: &str, name: &str, id: u64) -> S {
    let start = 1_700_000_000_000_000_000 + id * 1_000_000;
    S {
        service: service.to_owned(),
        instance: None,
        scope: None,
        span: Span {
            trace_id: trace_id(1),
            span_id: span_id(id),
            name: name.to_owned(),
            kind: 1,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 1_000_000,
            ..Span::default()
        },
    }
}

impl S {
    pub(crate) fn name(&self) -> &str {
        &self.span.name
    }

    pub(crate) fn trace(mut self, n: u64) -> Self {
        self.span.trace_id = trace_id(n);
        self
    }

    pub(crate) fn parent(mut self, id: u64) -> Self {
        self.span.parent_span_id = span_id(id);
        self
    }

    pub(crate) fn kind(mut self, kind: i32) -> Self {
        self.span.kind = kind;
        self
    }

    pub(crate) fn attr(mut self, key: &str, value: impl IntoAny) -> Self {
        self.span.attributes.push(kv(key, value));
        self
    }

    /// The attributes tracing-opentelemetry adds to every span.
    pub(crate) fn noise(self) -> Self {
        self.attr("code.file.path", "crates/api/src/runs.rs")
            .attr("code.module.name", "metis_api::runs")
            .attr("code.line.number", 42_i64)
            .attr("thread.id", 7_i64)
            .attr("thread.name", "tokio-runtime-worker")
            .attr("busy_ns", 123_456_i64)
            .attr("idle_ns", 654_321_i64)
            .attr("target", "metis_api::runs")
            .attr("level", "INFO")
    }

    /// An event at `offset` ns after the span start, with `level`, `target`, code noise and
    /// `fields`.
    pub(crate) fn event(
        mut self,
        offset: u64,
        level: &str,
        message: &str,
        fields: Vec<KeyValue>,
    ) -> Self {
        let mut attributes = vec![
            kv("level", level),
            kv("target", "metis_engine::runtime"),
            kv("code.file.path", "crates/engine/src/runtime.rs"),
            kv("code.line.number", 99_i64),
        ];
        attributes.extend(fields);
        self.span.events.push(Event {
            time_unix_nano: self.span.start_time_unix_nano + offset,
            name: message.to_owned(),
            attributes,
            dropped_attributes_count: 0,
        });
        self
    }

    pub(crate) fn status(mut self, code: i32, message: &str) -> Self {
        self.span.status = Some(Status {
            code,
            message: message.to_owned(),
        });
        self
    }

    pub(crate) fn link(mut self, trace: u64, span: u64) -> Self {
        self.span.links.push(Link {
            trace_id: trace_id(trace),
            span_id: span_id(span),
            ..Link::default()
        });
        self
    }

    pub(crate) fn start(mut self, ns: u64) -> Self {
        let duration = self.span.end_time_unix_nano - self.span.start_time_unix_nano;
        self.span.start_time_unix_nano = ns;
        self.span.end_time_unix_nano = ns + duration;
        self
    }

    pub(crate) fn open(mut self) -> Self {
        self.span.end_time_unix_nano = 0;
        self
    }

    /// Exported by another instance of its service: `service.instance.id` = `id`.
    pub(crate) fn instance(mut self, id: &str) -> Self {
        self.instance = Some(id.to_owned());
        self
    }

    /// Recorded under the instrumentation scope `name`.
    pub(crate) fn scope(mut self, name: &str) -> Self {
        self.scope = Some(name.to_owned());
        self
    }

    pub(crate) fn raw(mut self, f: impl FnOnce(&mut Span)) -> Self {
        f(&mut self.span);
        self
    }
}

/// The spans as OTLP data, each in its own `ResourceSpans` (as separate export batches would
/// deliver them), in the given order; resources carry the usual noise.
pub(crate) fn otlp(spans: &[S]) -> TracesData {
    TracesData {
        resource_spans: spans
            .iter()
            .map(|s| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", s.service.as_str()),
                        kv("service.version", "0.1.0"),
                        kv(
                            "service.instance.id",
                            s.instance
                                .clone()
                                .unwrap_or_else(|| instance_id(&s.service)),
                        ),
                        kv("telemetry.sdk.language", "rust"),
                    ],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: s.scope.clone().unwrap_or_else(|| s.service.clone()),
                        ..InstrumentationScope::default()
                    }),
                    spans: vec![s.span.clone()],
                    ..ScopeSpans::default()
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

/// One instance id per service name (a UUID, as Metis's services make them).
pub(crate) fn instance_id(service: &str) -> String {
    let n = service
        .bytes()
        .fold(0_u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    format!("0196a3a4-1111-7000-8000-{:012x}", n & 0xffff_ffff_ffff)
}

/// Deterministic permutations of `0..n` (reversed, rotated, and LCG-driven Fisher–Yates).
pub(crate) fn shuffles(n: usize) -> Vec<Vec<usize>> {
    let mut orders = vec![
        (0..n).rev().collect(),
        (0..n).map(|i| (i + n / 2) % n.max(1)).collect(),
    ];
    for seed in 1..=6_u64 {
        let mut order: Vec<usize> = (0..n).collect();
        let mut state = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        for i in (1..n).rev() {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let j = usize::try_from((state >> 33) % (i as u64 + 1)).expect("small");
            order.swap(i, j);
        }
        orders.push(order);
    }
    orders
}

pub(crate) const RUN_A: &str = "0196a3a4-5b6c-7d8e-9f00-112233445566";
pub(crate) const RUN_B: &str = "0196a3a4-5b6c-7d8e-9f00-aabbccddeeff";
pub(crate) const ENGINE_ID: &str = "4f1c2b3a-0000-4000-8000-0000000000e1";

/// A create → publish → workflow_run trace of run `run` (trace `trace`, span ids from `base`),
/// as Metis exports it, with SDK noise. The engine's `api_trace_id` names `create_run`.
pub(crate) fn run_trace(trace: u64, base: u64, run: &str, user: &str, state: &str) -> Vec<S> {
    let http = base;
    let create = base + 1;
    let publish = base + 2;
    let workflow = base + 3;
    let mut engine = span(ENGINE, "workflow_run", workflow)
        .trace(trace)
        .parent(publish)
        .kind(CONSUMER)
        .noise()
        .attr("run_id", run)
        .attr("user_id", user)
        .attr("workflow_type", "SH")
        .attr("state", state)
        .attr("duration_ms", 1234_i64)
        .attr("api_trace_id", span_hex(create).as_str());
    for (n, phase) in [
        "initializing",
        "building",
        "executing",
        "running",
        "parsing",
        "updating_db",
        "cleanup",
    ]
    .into_iter()
    .enumerate()
    {
        engine = engine.event(10 + n as u64, "INFO", "phase", vec![kv("state", phase)]);
    }
    if state != "COMPLETE" {
        engine = engine
            .attr("error", "exit status 3")
            .status(2, "workflow exited with status 3");
    }
    vec![
        span(API, "POST /runs", http)
            .trace(trace)
            .kind(SERVER)
            .noise()
            .attr("http.request.method", "POST")
            .attr("http.route", "/runs")
            .attr("url.path", "/runs")
            .attr("http.response.status_code", 200_i64)
            .attr("server.port", 38_123_i64)
            .attr("user_agent.original", "reqwest/0.13"),
        span(API, "create_run", create)
            .trace(trace)
            .parent(http)
            .noise()
            .attr("run_id", run)
            .attr("user_id", user)
            .attr("workflow_type", "SH")
            .attr("workflow_engine", "generic")
            .event(
                5,
                "INFO",
                "Run created and dispatched",
                vec![kv("run_id", run)],
            ),
        span(API, "publish metis.runs.generic.1.SH.1", publish)
            .trace(trace)
            .parent(create)
            .kind(PRODUCER)
            .noise()
            .attr("messaging.system", "nats")
            .attr("messaging.destination.name", "metis.runs.generic.1.SH.1"),
        engine,
    ]
}

/// A cancel → request_cancel → publish → workflow_cancel trace for run `run` sent to engine
/// `engine_id` (trace `trace`, span ids from `base`).
pub(crate) fn cancel_trace(trace: u64, base: u64, run: &str, engine_id: &str) -> Vec<S> {
    let subject = format!("metis.cancel.{engine_id}");
    vec![
        span(API, "POST /runs/{run_id}/cancel", base)
            .trace(trace)
            .kind(SERVER)
            .attr("http.route", "/runs/{run_id}/cancel")
            .attr("url.path", format!("/runs/{run}/cancel"))
            .attr("http.response.status_code", 200_i64),
        span(API, "request_cancel", base + 1)
            .trace(trace)
            .parent(base)
            .attr("run_id", run),
        span(API, &format!("publish {subject}"), base + 2)
            .trace(trace)
            .parent(base + 1)
            .kind(PRODUCER)
            .attr("messaging.destination.name", subject.as_str()),
        span(ENGINE, "workflow_cancel", base + 3)
            .trace(trace)
            .parent(base + 2)
            .kind(CONSUMER)
            .attr("run_id", run),
    ]
}
