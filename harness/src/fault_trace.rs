//! The harness's own actions as spans, so a snapshot shows where a fault struck.
//!
//! Every fault verb of [`crate::fault`] (kill, pause, restart, partition, a collector fault,
//! clients that hang up, …) records an [`Action`]: what was done, to what, from when to when,
//! and which runs it hit. When the scenario collects its spans, after the services have
//! flushed, [`export`] sends each action as a span of service [`HARNESS_SERVICE`] over
//! OTLP/gRPC to the scenario's receiver, with the action's real start and end times:
//!
//! - an action that hit runs (an engine killed or paused while it ran them, run messages
//!   purged while they waited) becomes a span in **each hit run's trace**, a child of the
//!   run's `publish` span — where the engine's consumer span hangs. If that consumer span never
//!   arrived (the engine died before exporting it, the message was lost), the span carries
//!   `lost` (`engine killed`, `run message purged`), drawn as `[lost: engine killed]`, so the
//!   cut-off span is marked and not silently absent;
//! - every other action becomes a child of one root span `faults` in a trace of its own
//!   (one per scenario), in the order they happened.
//!
//! Names of NATS servers are labelled `server#N` by first mention, so a snapshot does not
//! depend on which server happened to lead. A leader the scenario reads with
//! [`crate::Stack::nats_leader`] that differs from the one it read before for the same stream
//! adds a `new leader observed` action: the cluster snapshots show the leader change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use anyhow::{Context as _, Result};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind as ProtoKind;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The service name of the harness's own spans in snapshots.
pub const HARNESS_SERVICE: &str = "e2e-harness";

/// The name of the root span of the harness's own trace.
pub const FAULTS_ROOT: &str = "faults";

/// One thing the harness did to the system under test.
#[derive(Debug, Clone)]
pub struct Action {
    /// The span name, e.g. `kill engine`.
    pub name: String,
    /// `fault.target` first, then what else the action says (`exports.refused`, …).
    pub attributes: Vec<KeyValue>,
    /// When it began.
    pub start: SystemTime,
    /// When it ended (`None` while it lasts, e.g. a pause not yet resumed: it then ends when
    /// the spans are exported).
    pub end: Option<SystemTime>,
    /// The runs it hit (their ids), when the harness knows them.
    pub hits: Vec<String>,
    /// What a hit run loses when its consumer span never arrives (`engine killed`).
    pub loses: Option<String>,
}

impl Action {
    /// An action named `name` on `target`, begun now.
    #[must_use]
    pub fn new(name: &str, target: &str) -> Self {
        Self {
            name: name.to_owned(),
            attributes: vec![KeyValue::new("fault.target", target.to_owned())],
            start: SystemTime::now(),
            end: None,
            hits: Vec::new(),
            loses: None,
        }
    }

    /// One more attribute.
    #[must_use]
    pub fn with(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        self.attributes.push(KeyValue::new(key, value));
        self
    }

    /// The runs it hit, and what each loses if its consumer span never arrives.
    #[must_use]
    pub fn hitting(mut self, runs: Vec<String>, loses: &str) -> Self {
        self.hits = runs;
        self.loses = Some(loses.to_owned());
        self
    }
}

/// The actions of one stack, shared by its verbs and its load drivers.
#[derive(Debug, Clone, Default)]
pub struct FaultLog(Arc<Mutex<Log>>);

#[derive(Debug, Default)]
struct Log {
    actions: Vec<Action>,
    /// NATS server names in order of first mention (`server#1` is the first).
    servers: Vec<String>,
    /// The leader last read for each stream.
    leaders: BTreeMap<String, String>,
    /// Whether [`export`] created the harness's own trace.
    own_trace: bool,
}

impl FaultLog {
    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a finished action (its end is now).
    pub fn done(&self, mut action: Action) {
        action.end = Some(SystemTime::now());
        self.log().actions.push(action);
    }

    /// Records an action that lasts until [`FaultLog::end`] names it (a pause, a partition).
    pub fn begin(&self, action: Action) {
        self.log().actions.push(action);
    }

    /// Ends the latest lasting action named `name` on `target`; `false` if there was none.
    pub fn end(&self, name: &str, target: &str) -> bool {
        let mut log = self.log();
        let open = log.actions.iter_mut().rev().find(|a| {
            a.end.is_none()
                && a.name == name
                && a.attributes
                    .first()
                    .is_some_and(|kv| kv.value.as_str() == target)
        });
        match open {
            Some(a) => {
                a.end = Some(SystemTime::now());
                true
            }
            None => false,
        }
    }

    /// `server#N` for NATS server `name`, numbered by first mention.
    #[must_use]
    pub fn server_label(&self, name: &str) -> String {
        let mut log = self.log();
        let index = match log.servers.iter().position(|s| s == name) {
            Some(i) => i,
            None => {
                log.servers.push(name.to_owned());
                log.servers.len() - 1
            }
        };
        format!("server#{}", index + 1)
    }

    /// The streams `server` was last read to lead, sorted.
    #[must_use]
    pub fn led_by(&self, server: &str) -> Vec<String> {
        self.log()
            .leaders
            .iter()
            .filter(|(_, l)| *l == server)
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// Notes that `stream` is led by `server` now; a different leader than the last one read
    /// records a `new leader observed` action.
    pub fn observe_leader(&self, stream: &str, server: &str) {
        let before = self
            .log()
            .leaders
            .insert(stream.to_owned(), server.to_owned());
        if let Some(before) = before.filter(|b| b != server) {
            let action = Action::new("new leader observed", stream)
                .with("nats.leader.before", self.server_label(&before))
                .with("nats.leader.after", self.server_label(server));
            self.done(action);
        }
    }

    /// Every action so far, in the order they began.
    #[must_use]
    pub fn actions(&self) -> Vec<Action> {
        self.log().actions.clone()
    }

    /// How many traces of its own the harness added to the collected spans (0 or 1).
    #[must_use]
    pub fn own_traces(&self) -> usize {
        usize::from(self.log().own_trace)
    }
}

/// Where a hit run's span goes: the run's trace and its `publish` span, and whether that has
/// a child (the consumer span) yet.
#[derive(Debug, Clone, Copy)]
struct Hit {
    trace_id: TraceId,
    publish: SpanId,
    consumed: bool,
}

/// The `publish` (producer) span of the run's first trace: among the traces holding a span
/// whose `run_id` is `run` and a producer span, the one that started first (the create, not a
/// later cancel or the reaper's), and in it the producer that started first.
fn find_hit(data: &TracesData, run: &str) -> Option<Hit> {
    let spans: Vec<_> = data
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect();
    let names_run = |s: &&&opentelemetry_proto::tonic::trace::v1::Span| {
        s.attributes.iter().any(|kv| {
            kv.key == "run_id"
                && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()),
                    Some(AnyValue::StringValue(v)) if v == run)
        })
    };
    let is_producer =
        |s: &&&opentelemetry_proto::tonic::trace::v1::Span| s.kind == ProtoKind::Producer as i32;
    let trace = spans
        .iter()
        .filter(names_run)
        .map(|s| s.trace_id.clone())
        .filter(|t| spans.iter().any(|s| s.trace_id == *t && is_producer(&s)))
        .min_by_key(|t| {
            spans
                .iter()
                .filter(|s| s.trace_id == *t)
                .map(|s| s.start_time_unix_nano)
                .min()
        })?;
    let producer = spans
        .iter()
        .filter(|s| s.trace_id == trace && is_producer(s))
        .min_by_key(|s| s.start_time_unix_nano)?;
    let consumed = spans
        .iter()
        .any(|s| s.trace_id == trace && s.parent_span_id == producer.span_id);
    Some(Hit {
        trace_id: TraceId::from_bytes(trace.as_slice().try_into().ok()?),
        publish: SpanId::from_bytes(producer.span_id.as_slice().try_into().ok()?),
        consumed,
    })
}

/// Exports `log`'s actions as spans (see the module docs) to the OTLP/gRPC `endpoint`, placed
/// by what `data` (every span collected so far) holds; returns how many spans it exported.
pub async fn export(
    log: &FaultLog,
    endpoint: &str,
    scenario: &str,
    data: &TracesData,
) -> Result<usize> {
    let actions = log.actions();
    if actions.is_empty() {
        return Ok(0);
    }
    let now = SystemTime::now();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .context("building the harness's OTLP exporter")?;
    let provider = SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name(HARNESS_SERVICE)
                .build(),
        )
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer(HARNESS_SERVICE);
    let mut placed: Vec<(Action, Vec<Hit>)> = Vec::new();
    let mut own: Vec<Action> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut memo: HashMap<String, Option<Hit>> = HashMap::new();
    for action in actions {
        let hits: Vec<Hit> = action
            .hits
            .iter()
            .filter(|run| seen.insert(format!("{}/{run}", action.name)))
            .filter_map(|run| {
                memo.entry(run.clone())
                    .or_insert_with(|| find_hit(data, run))
                    .as_ref()
                    .copied()
            })
            .collect();
        if hits.is_empty() {
            own.push(action);
        } else {
            placed.push((action, hits));
        }
    }
    let mut count = 0;
    for (action, hits) in &placed {
        for hit in hits {
            let parent = Context::new().with_remote_span_context(SpanContext::new(
                hit.trace_id,
                hit.publish,
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            ));
            let mut attributes = action.attributes.clone();
            if let (false, Some(loses)) = (hit.consumed, &action.loses) {
                attributes.push(KeyValue::new("lost", loses.clone()));
            }
            let mut span = tracer
                .span_builder(action.name.clone())
                .with_kind(SpanKind::Internal)
                .with_start_time(action.start)
                .with_attributes(attributes)
                .start_with_context(&tracer, &parent);
            span.end_with_timestamp(action.end.unwrap_or(now));
            count += 1;
        }
    }
    if !own.is_empty() {
        let start = own.iter().map(|a| a.start).min().unwrap_or(now);
        let end = own
            .iter()
            .map(|a| a.end.unwrap_or(now))
            .max()
            .unwrap_or(now);
        let root = tracer
            .span_builder(FAULTS_ROOT)
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .with_attributes([KeyValue::new("scenario", scenario.to_owned())])
            .start(&tracer);
        let cx = Context::current_with_span(root);
        for action in &own {
            let mut span = tracer
                .span_builder(action.name.clone())
                .with_kind(SpanKind::Internal)
                .with_start_time(action.start)
                .with_attributes(action.attributes.clone())
                .start_with_context(&tracer, &cx);
            span.end_with_timestamp(action.end.unwrap_or(now));
            count += 1;
        }
        cx.span().end_with_timestamp(end);
        count += 1;
        log.log().own_trace = true;
    }
    tokio::task::spawn_blocking(move || {
        provider.force_flush()?;
        provider.shutdown()
    })
    .await
    .context("joining the harness's exporter")?
    .context("exporting the harness's spans")?;
    Ok(count)
}
