//! OTLP spans → normalised [`SpanForest`]: invariants, the redaction policy, stable sorting
//! and renumbering. This module owns the **one** redaction policy of the suite; every rule is
//! listed here and nowhere else.
//!
//! # Invariants (checked first, in this order; each failure lists every offender and what was seen)
//!
//! 1. Every span has a 16-byte trace id and an 8-byte span id (neither all zero) and an empty
//!    or 8-byte parent span id; parent links form no cycle ([`TreeError::MalformedSpans`]).
//! 2. No span id arrives twice ([`TreeError::DuplicateSpanIds`]).
//! 3. No span is left open: `end_time_unix_nano` is set and not before the start
//!    ([`TreeError::OpenSpans`]).
//! 4. No orphan: every parent span id names a span of the same trace that arrived
//!    ([`TreeError::OrphanSpans`]) — unless [`Options::draw_orphans`] asks to draw each
//!    missing parent as a `[missing parent]` span of service `[unknown]` (its children keep
//!    their services), spanning its children's time. A span-id reference (invariant 6) to a
//!    span that never arrived then reads `→[missing]` instead of failing.
//! 5. Exactly [`Options::expected_traces`] traces, when given ([`TreeError::TraceCount`]).
//! 6. Every id reference resolves: the value of an attribute whose key (last `.`-segment) ends
//!    in `trace_id` or `span_id` (`api_trace_id`, `parent_span_id`, ...) that is 16 lowercase
//!    hex digits must be the span id of a span of the **same** trace, and one that is 32 hex
//!    digits must be the trace id of a trace in the data ([`TreeError::UnresolvedReferences`]).
//!
//! # Structure
//!
//! - Spans are grouped by trace id and linked to their parent by `parent_span_id`; a span of
//!   another service hangs under the span that caused it (e.g. the engine's consumer span under
//!   the API's producer span, through the propagated `traceparent`).
//! - Siblings are sorted by a stable key: service, name, the rest of the rendered span line
//!   (kind, status, attributes), its entry, event and link lines, then its children's keys —
//!   all rendered with *unnumbered* placeholders (`[run#]`), so numbering cannot feed back into
//!   order. **Causal order where it is knowable** comes first: a sibling that ended before
//!   another one *of the same process* (same resource, so one clock) started is placed before
//!   it (publish after persist shows as such); among the siblings no remaining one is known to
//!   precede, the stable key decides. Spans of different processes, and overlapping spans,
//!   are never ordered by time (clocks differ). Siblings that run concurrently in the code but
//!   sometimes happen not to overlap would flip between the two orders from run to run: a
//!   snapshot of such spans is flaky by construction, and `just flake-check` shows it (no
//!   Metis tree has them; sequential code, the case this is for, never flips). Traces are
//!   sorted by their roots' keys. Only when two siblings (or traces) render identically and no
//!   causal order is known do start time and then raw id break the tie; the rendering is the
//!   same either way, only numbers shared with other subtrees can depend on it.
//! - Events are kept in time order (stable for equal timestamps); links are sorted by their
//!   rendering; attributes are sorted by key.
//!
//! # Redaction policy
//!
//! Numbered placeholders are numbered per kind by first appearance in render order (the order
//! in which [`SpanForest::render`] prints them), so equal raw values get equal placeholders and
//! links stay checkable.
//!
//! **Ids.** Trace ids → `trace#N` (trace headers), span ids → `span#N` (depth first over the
//! whole forest). A span's alias is only printed, as `(span#N)` after its name, when some
//! reference needs it (see references).
//!
//! **Resources and scopes** are shown where a service enters a trace (see the rendered format
//! in the crate docs), their attributes redacted by the rules below; `service.instance.id` →
//! `[instance#N]` numbered in render order (so also that id inside any string), or
//! `[instance#*]` for the services of [`Options::unordered_instances`].
//!
//! **Dropped entirely (SDK noise).** Span and event attributes `code.*`, `thread.*`, `busy_ns`, `idle_ns`,
//! `target`, and `level` on spans. On events `level` is taken out and shown before the message.
//! The name `tracing` gives an event without a message (`event src/x.rs:12`) becomes empty.
//!
//! **By attribute key** (the key's last `.`-segment, any value type; nested keys of a key/value
//! list are `outer.inner`). A placeholder carries the value's type — `[duration:int]`,
//! `[timestamp:string]`, `[port:int]` (`string`, `int`, `double`, `bool`, `array`, `map`,
//! `bytes`) — so a value that changed type is a snapshot change; an empty string stays `""`:
//!
//! | key | becomes |
//! | --- | --- |
//! | `duration`, `duration_*`, `*_duration`, `*_duration_*`, `*_ns`, `elapsed*` | `[duration:<type>]` |
//! | `pid`, `*_pid` (so also `process.pid`) | `[pid:<type>]` |
//! | `port`, `*_port` (so also `server.port`) | `[port:<type>]` |
//! | `timestamp`, `*_timestamp`, `*_at`, `*_time` | `[timestamp:<type>]` |
//! | `host.name`, `hostname` | `[host:<type>]` |
//! | `address`, `*_address` (`server.address`, `client.address`, ...) | kept when loopback or unspecified (`localhost`, `127.*`, `::1`, `0.0.0.0`, `::`), else `[host]` (`[host]:[port]` with a port) |
//! | `*trace_id`, `*span_id` | a reference (see invariant 6), else as any string |
//!
//! **In every string** (span names, status messages, event messages, attribute values, array
//! elements), in this order:
//!
//! 1. The scenario's literal replacements ([`Options::redact`], longest literal first), e.g. a
//!    temp dir → `[workdir]`, an engine id → `[engine#1]`.
//! 2. References: a 32-hex token that is a trace id in the data → `→trace#N`; a 16-hex token
//!    that is a span id in the data → `→<span name>` when the span is in the same trace and the
//!    only one of that name there, else `→<span name>(span#N)` (and that span's line shows
//!    `(span#N)`). Links render the same way, or `[external]` when the linked span is not in
//!    the data.
//! 3. UUIDs (any case) → `[run#N]` when the same UUID is the value of a `run_id`/`*_run_id`
//!    attribute anywhere in the data (so also inside span names such as
//!    `POST /runs/[run#1]/cancel`, event fields and paths), else `[uuid#N]`.
//! 4. RFC 3339 timestamps (`2024-05-01T12:00:00.123Z`, also with a space) → `[timestamp]`.
//! 5. URLs `scheme://host:port/...`: a host that is not loopback → `[host]`, the port →
//!    `[port]`; the URL path is kept, except for `file://` URLs whose path is a path (7.).
//! 6. Addresses `localhost:PORT`, `IPv4:PORT`, `[IPv6]:PORT` → the port becomes `[port]` and a
//!    non-loopback host `[host]`.
//! 7. Absolute paths (a `/` at the start or after whitespace, a quote, `=`, `(`, `[`, `,` or
//!    `:`) → `[path]/<last component>`. Not applied to span names nor to `url.*`/`http.*`
//!    attributes, whose `/...` values are URL paths and routes.
//!
//! Not redacted: free-text durations inside messages ("took 12ms"), hex ids that do not belong
//! to the data, relative paths. Record such values as fields with a redacted key instead, or add
//! a literal replacement.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{Span as OtlpSpan, TracesData};
use regex::{Captures, Regex};

use super::model::{
    Dropped, Entry, Event, Link, SpanForest, SpanKind, SpanNode, Status, StatusCode, Trace, Value,
};
use super::render;

/// How to build a [`SpanForest`]: the expected trace count and the scenario's own redactions.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Exactly this many traces must be present; `None` skips the check.
    pub expected_traces: Option<usize>,
    /// Draw a span whose parent never arrived under a `[missing parent]` node instead of
    /// failing with [`TreeError::OrphanSpans`] (see [`crate::with_missing_parents`]).
    pub draw_orphans: bool,
    /// Literal replacements applied before every other rule (see the policy above).
    pub redactions: Vec<Redaction>,
    /// Services whose instances are interchangeable: which instance handled a span depends on
    /// scheduling (e.g. engines sharing a work queue), so their `service.instance.id` reads
    /// `[instance#*]` instead of a number.
    pub unordered_instances: Vec<String>,
}

impl Options {
    /// No trace-count check, no extra redactions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Require exactly `n` traces.
    pub fn expect_traces(mut self, n: usize) -> Self {
        self.expected_traces = Some(n);
        self
    }

    /// Draw orphans under `[missing parent]` nodes (a partial trace, such as one whose first
    /// spans a collector outage lost) instead of failing.
    pub fn draw_orphans(mut self) -> Self {
        self.draw_orphans = true;
        self
    }

    /// Render the instances of `service` as `[instance#*]`: which of them handled a span depends
    /// on scheduling, so a number would make the tree timing-dependent. Assert the split in the
    /// scenario instead.
    pub fn unordered_instances(mut self, service: impl Into<String>) -> Self {
        self.unordered_instances.push(service.into());
        self
    }

    /// Replace every occurrence of `literal` by `placeholder` in every string, before any other
    /// rule (e.g. a scenario's temp dir → `[workdir]`, an engine id → `[engine#1]`). An empty
    /// literal is ignored.
    pub fn redact(mut self, literal: impl Into<String>, placeholder: impl Into<String>) -> Self {
        self.redactions.push(Redaction {
            literal: literal.into(),
            placeholder: placeholder.into(),
        });
        self
    }
}

/// One literal replacement of [`Options::redactions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redaction {
    /// The text to replace.
    pub literal: String,
    /// What to write instead, e.g. `[workdir]`.
    pub placeholder: String,
}

/// Why the collected spans do not form the expected, complete set of trees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    /// A span with a missing or malformed id, or spans whose parent links form a cycle.
    #[error("malformed span(s) in the otlp data:{}", bullets(.0))]
    MalformedSpans(Vec<String>),
    /// The same span id arrived more than once.
    #[error("duplicate span id(s) (was a batch exported twice?):{}", bullets(.0))]
    DuplicateSpanIds(Vec<String>),
    /// Spans without a (valid) end time.
    #[error("{} span(s) left open (no end time, or an end before the start):{}", .0.len(), bullets(.0))]
    OpenSpans(Vec<String>),
    /// Spans whose parent never arrived.
    #[error("{} orphan span(s): the parent never arrived:{}", .0.len(), bullets(.0))]
    OrphanSpans(Vec<String>),
    /// Not the expected number of traces.
    #[error("expected {expected} trace(s), received {actual}:{}", bullets(.traces))]
    TraceCount {
        /// [`Options::expected_traces`].
        expected: usize,
        /// How many traces arrived.
        actual: usize,
        /// One line per received trace: its spans.
        traces: Vec<String>,
    },
    /// Id-valued attributes that name no span (or trace) of the data.
    #[error("unresolved id reference(s):{}", bullets(.0))]
    UnresolvedReferences(Vec<String>),
}

impl TreeError {
    /// Whether more data could still fix this (open or orphan spans, too few traces): a waiting
    /// caller keeps polling on these and gives up on the others.
    pub fn is_incomplete(&self) -> bool {
        match self {
            Self::OpenSpans(_) | Self::OrphanSpans(_) => true,
            Self::TraceCount {
                expected, actual, ..
            } => actual < expected,
            Self::MalformedSpans(_) | Self::DuplicateSpanIds(_) | Self::UnresolvedReferences(_) => {
                false
            }
        }
    }
}

fn bullets(items: &[String]) -> String {
    items.iter().map(|i| format!("\n  - {i}")).collect()
}

impl SpanForest {
    /// Checks the invariants, redacts, links, sorts and renumbers every span of `data`.
    ///
    /// # Errors
    ///
    /// The first violated invariant (see the policy above), listing every offender.
    pub fn from_otlp(data: &TracesData, options: &Options) -> Result<SpanForest, TreeError> {
        if options.draw_orphans {
            let data = crate::with_missing_parents(data);
            return Self::from_resource_spans(&data.resource_spans, options);
        }
        Self::from_resource_spans(&data.resource_spans, options)
    }

    /// [`SpanForest::from_otlp`] over several export requests' worth of resource spans (what a
    /// receiver keeps), in any order.
    ///
    /// # Errors
    ///
    /// As [`SpanForest::from_otlp`].
    pub fn from_resource_spans<'a>(
        resource_spans: impl IntoIterator<
            Item = &'a opentelemetry_proto::tonic::trace::v1::ResourceSpans,
        >,
        options: &Options,
    ) -> Result<SpanForest, TreeError> {
        let raws = collect(resource_spans);
        check_structure(&raws, options)?;
        build(&raws, options)
    }
}

// ---------------------------------------------------------------------------------------------
// Collection and structural invariants

/// One received span with its decoded ids.
struct Raw<'a> {
    span: &'a OtlpSpan,
    service: &'a str,
    resource: Option<&'a Resource>,
    scope: Option<&'a InstrumentationScope>,
    trace: String,
    id: String,
    parent: Option<String>,
}

impl Raw<'_> {
    fn describe(&self) -> String {
        format!("{} {:?} (span {})", self.service, self.span.name, self.id)
    }
}

fn collect<'a>(
    resource_spans: impl IntoIterator<Item = &'a opentelemetry_proto::tonic::trace::v1::ResourceSpans>,
) -> Vec<Raw<'a>> {
    let mut raws = Vec::new();
    for rs in resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.as_str()),
                _ => None,
            })
            .unwrap_or("unknown_service");
        for (scope, span) in rs
            .scope_spans
            .iter()
            .flat_map(|ss| ss.spans.iter().map(move |span| (ss.scope.as_ref(), span)))
        {
            let parent = (!span.parent_span_id.is_empty()
                && span.parent_span_id.iter().any(|b| *b != 0))
            .then(|| hex(&span.parent_span_id));
            raws.push(Raw {
                span,
                service,
                resource: rs.resource.as_ref(),
                scope,
                trace: hex(&span.trace_id),
                id: hex(&span.span_id),
                parent,
            });
        }
    }
    raws
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn check_structure(raws: &[Raw<'_>], options: &Options) -> Result<(), TreeError> {
    let mut malformed: Vec<String> = raws
        .iter()
        .filter_map(|r| {
            let s = r.span;
            let bad_trace = s.trace_id.len() != 16 || s.trace_id.iter().all(|b| *b == 0);
            let bad_span = s.span_id.len() != 8 || s.span_id.iter().all(|b| *b == 0);
            let bad_parent = !s.parent_span_id.is_empty() && s.parent_span_id.len() != 8;
            (bad_trace || bad_span || bad_parent).then(|| {
                format!(
                    "{} {:?}: trace id {:?}, span id {:?}, parent span id {:?}",
                    r.service,
                    s.name,
                    r.trace,
                    r.id,
                    hex(&s.parent_span_id)
                )
            })
        })
        .collect();
    if !malformed.is_empty() {
        malformed.sort();
        return Err(TreeError::MalformedSpans(malformed));
    }

    let mut by_id: BTreeMap<&str, Vec<&Raw<'_>>> = BTreeMap::new();
    for r in raws {
        by_id.entry(&r.id).or_default().push(r);
    }
    let duplicates: Vec<String> = by_id
        .iter()
        .filter(|(_, rs)| rs.len() > 1)
        .map(|(id, rs)| {
            let who: Vec<String> = rs
                .iter()
                .map(|r| format!("{} {:?} in trace {}", r.service, r.span.name, r.trace))
                .collect();
            format!("span {id} arrived {} times: {}", rs.len(), who.join("; "))
        })
        .collect();
    if !duplicates.is_empty() {
        return Err(TreeError::DuplicateSpanIds(duplicates));
    }

    let mut open: Vec<String> = raws
        .iter()
        .filter(|r| {
            r.span.end_time_unix_nano == 0
                || r.span.end_time_unix_nano < r.span.start_time_unix_nano
        })
        .map(|r| {
            format!(
                "{} in trace {}: start {} ns, end {} ns",
                r.describe(),
                r.trace,
                r.span.start_time_unix_nano,
                r.span.end_time_unix_nano
            )
        })
        .collect();
    if !open.is_empty() {
        open.sort();
        return Err(TreeError::OpenSpans(open));
    }

    let traces = group_by_trace(raws);
    let known: HashSet<(&str, &str)> = raws
        .iter()
        .map(|r| (r.trace.as_str(), r.id.as_str()))
        .collect();
    let mut orphans: Vec<String> = raws
        .iter()
        .filter_map(|r| {
            let parent = r.parent.as_deref()?;
            if known.contains(&(r.trace.as_str(), parent)) {
                return None;
            }
            let elsewhere = raws
                .iter()
                .find(|o| o.id == parent)
                .map(|o| format!(" (a span with that id is in trace {})", o.trace))
                .unwrap_or_default();
            Some(format!(
                "{} has parent span {parent}, which never arrived{elsewhere}; trace {} holds: {}",
                r.describe(),
                r.trace,
                list_spans(raws, &traces[r.trace.as_str()])
            ))
        })
        .collect();
    if !orphans.is_empty() {
        orphans.sort();
        return Err(TreeError::OrphanSpans(orphans));
    }

    if let Some(expected) = options.expected_traces
        && expected != traces.len()
    {
        return Err(TreeError::TraceCount {
            expected,
            actual: traces.len(),
            traces: traces
                .iter()
                .map(|(trace, members)| format!("trace {trace}: {}", list_spans(raws, members)))
                .collect(),
        });
    }
    Ok(())
}

fn group_by_trace<'r>(raws: &'r [Raw<'_>]) -> BTreeMap<&'r str, Vec<usize>> {
    let mut traces: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in raws.iter().enumerate() {
        traces.entry(&r.trace).or_default().push(i);
    }
    traces
}

/// `metis-api "POST /runs" (span …), …` in start-time order, for error messages.
fn list_spans(raws: &[Raw<'_>], members: &[usize]) -> String {
    let mut members = members.to_vec();
    members.sort_by_key(|&i| (raws[i].span.start_time_unix_nano, raws[i].id.clone()));
    members
        .iter()
        .map(|&i| raws[i].describe())
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// Redaction

/// Marks a numbered or resolved token inside a redacted string: `MARK_START index MARK_END`,
/// `index` into [`Redactor::tokens`]. Private-use characters never occur in real data and no
/// pattern below matches them (the path pattern includes them in a component on purpose).
const MARK_START: char = '\u{E000}';
const MARK_END: char = '\u{E001}';

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Token {
    Run(String),
    Uuid(String),
    /// Index into the raw spans.
    SpanRef(usize),
    /// Trace id (hex).
    TraceRef(String),
    /// A `service.instance.id` (lowercase).
    Instance(String),
}

/// The resource attribute naming a service instance (`[instance#N]`).
const INSTANCE_KEY: &str = "service.instance.id";

static ID_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(?:[0-9a-f]{32}|[0-9a-f]{16})\b").unwrap());
static UUID_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b").unwrap()
});
static UUID_FULL_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$").unwrap()
});
static TIMESTAMP_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:[Zz]|[+-]\d{2}:?\d{2})?")
        .unwrap()
});
static URL_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"\b(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<user>[^\s/@"'\[\]]*@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_~%]*)(?::(?P<port>\d{1,5}))?(?P<path>/[^\s"']*)?"#,
    )
    .unwrap()
});
static ADDR_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?P<pre>^|[^A-Za-z0-9.\-])(?P<host>localhost|\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})\b")
        .unwrap()
});
static PATH_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?P<pre>^|[\s"'=(\[,:])(?P<path>/[^\s"'`<>|;,()\[\]{}=:/]+(?:/[^\s"'`<>|;,()\[\]{}=:/]*)*)"#).unwrap()
});
static EVENT_WITHOUT_MESSAGE_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^event \S+:\d+$").unwrap());

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.starts_with("127.")
        || host == "::1"
        || host == "0.0.0.0"
        || host == "::"
}

/// What a key's rule does to its value.
enum KeyRule {
    Drop,
    Placeholder(&'static str),
    Address,
    IdRef,
    Text { paths: bool },
}

fn key_rule(key: &str) -> KeyRule {
    let last = key.rsplit('.').next().unwrap_or(key);
    if key.starts_with("code.")
        || key.starts_with("thread.")
        || matches!(key, "busy_ns" | "idle_ns" | "target" | "level")
    {
        KeyRule::Drop
    } else if last == "duration"
        || last.starts_with("duration_")
        || last.ends_with("_duration")
        || last.contains("_duration_")
        || last.ends_with("_ns")
        || last.starts_with("elapsed")
    {
        KeyRule::Placeholder("[duration]")
    } else if last == "pid" || last.ends_with("_pid") {
        KeyRule::Placeholder("[pid]")
    } else if last == "port" || last.ends_with("_port") {
        KeyRule::Placeholder("[port]")
    } else if last == "timestamp"
        || last.ends_with("_timestamp")
        || last.ends_with("_at")
        || last.ends_with("_time")
    {
        KeyRule::Placeholder("[timestamp]")
    } else if key == "host.name" || last == "hostname" {
        KeyRule::Placeholder("[host]")
    } else if last == "address" || last.ends_with("_address") {
        KeyRule::Address
    } else if last.ends_with("trace_id") || last.ends_with("span_id") {
        KeyRule::IdRef
    } else {
        let url_like = key.starts_with("url.")
            || key.starts_with("http.")
            || matches!(last, "uri" | "url" | "route");
        KeyRule::Text { paths: !url_like }
    }
}

fn is_run_id_key(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    last == "run_id" || last.ends_with("_run_id")
}

/// Turns raw strings into strings with placeholders and token marks.
struct Redactor<'a> {
    raws: &'a [Raw<'a>],
    literals: Vec<(&'a str, &'a str)>,
    span_index: HashMap<&'a str, usize>,
    traces: HashSet<&'a str>,
    run_ids: HashSet<String>,
    /// Every resource's `service.instance.id` (lowercase) → whether its service's instances
    /// are unordered ([`Options::unordered_instances`]).
    instances: HashMap<String, bool>,
    tokens: Vec<Token>,
    token_index: HashMap<Token, usize>,
    unresolved: Vec<String>,
    /// [`Options::draw_orphans`]: a reference to a span that never arrived reads `→[missing]`.
    partial: bool,
    /// Redacted (marked) span names by raw index, once every node is built.
    names: Vec<String>,
}

impl<'a> Redactor<'a> {
    fn new(raws: &'a [Raw<'a>], options: &'a Options) -> Self {
        let mut literals: Vec<(&str, &str)> = options
            .redactions
            .iter()
            .filter(|r| !r.literal.is_empty())
            .map(|r| (r.literal.as_str(), r.placeholder.as_str()))
            .collect();
        literals.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(b.0)));
        let mut run_ids = HashSet::new();
        let mut note_run_ids = |attrs: &[KeyValue]| {
            for kv in attrs {
                if is_run_id_key(&kv.key)
                    && let Some(any_value::Value::StringValue(s)) =
                        kv.value.as_ref().and_then(|v| v.value.as_ref())
                    && UUID_FULL_RE.is_match(s.trim())
                {
                    run_ids.insert(s.trim().to_ascii_lowercase());
                }
            }
        };
        let mut instances = HashMap::new();
        for r in raws {
            note_run_ids(&r.span.attributes);
            for e in &r.span.events {
                note_run_ids(&e.attributes);
            }
            if let Some(any_value::Value::StringValue(id)) = r
                .resource
                .and_then(|res| res.attributes.iter().find(|kv| kv.key == INSTANCE_KEY))
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            {
                let unordered = options.unordered_instances.iter().any(|s| s == r.service);
                // One id under several services: unordered if any of them is (arrival order
                // must not decide).
                *instances
                    .entry(id.trim().to_ascii_lowercase())
                    .or_insert(false) |= unordered;
            }
        }
        Self {
            raws,
            literals,
            span_index: raws
                .iter()
                .enumerate()
                .map(|(i, r)| (r.id.as_str(), i))
                .collect(),
            traces: raws.iter().map(|r| r.trace.as_str()).collect(),
            run_ids,
            instances,
            tokens: Vec::new(),
            token_index: HashMap::new(),
            unresolved: Vec::new(),
            partial: options.draw_orphans,
            names: Vec::new(),
        }
    }

    fn mark(&mut self, token: Token) -> String {
        let index = *self.token_index.entry(token.clone()).or_insert_with(|| {
            self.tokens.push(token);
            self.tokens.len() - 1
        });
        format!("{MARK_START}{index}{MARK_END}")
    }

    /// Applies the string rules 1–7 of the policy.
    fn text(&mut self, input: &str, paths: bool) -> String {
        let mut s = input.to_owned();
        for (literal, placeholder) in &self.literals {
            if s.contains(literal) {
                s = s.replace(literal, placeholder);
            }
        }
        s = replace(&ID_RE, &s, |c| {
            let m = &c[0];
            if m.len() == 32 && self.traces.contains(m) {
                self.mark(Token::TraceRef(m.to_owned()))
            } else if let Some(&i) = self.span_index.get(m).filter(|_| m.len() == 16) {
                self.mark(Token::SpanRef(i))
            } else {
                m.to_owned()
            }
        });
        s = replace(&UUID_RE, &s, |c| {
            let uuid = c[0].to_ascii_lowercase();
            if self.instances.contains_key(&uuid) {
                self.mark(Token::Instance(uuid))
            } else if self.run_ids.contains(&uuid) {
                self.mark(Token::Run(uuid))
            } else {
                self.mark(Token::Uuid(uuid))
            }
        });
        s = TIMESTAMP_RE.replace_all(&s, "[timestamp]").into_owned();
        s = replace(&URL_RE, &s, |c| {
            let scheme = &c["scheme"];
            let user = c.name("user").map_or("", |m| m.as_str());
            let host = &c["host"];
            let host = if host.is_empty() || is_loopback(host) {
                host
            } else {
                "[host]"
            };
            let port = if c.name("port").is_some() {
                ":[port]"
            } else {
                ""
            };
            let path = c.name("path").map_or("", |m| m.as_str());
            let path = if scheme.eq_ignore_ascii_case("file") && paths {
                redact_path(path)
            } else {
                path.to_owned()
            };
            format!("{scheme}://{user}{host}{port}{path}")
        });
        s = replace(&ADDR_RE, &s, |c| {
            let host = &c["host"];
            let host = if is_loopback(host) { host } else { "[host]" };
            format!("{}{host}:[port]", &c["pre"])
        });
        if paths {
            s = replace(&PATH_RE, &s, |c| {
                format!("{}{}", &c["pre"], redact_path(&c["path"]))
            });
        }
        s
    }

    /// The policy's key rules, then the string rules; `None` drops the attribute.
    fn value(&mut self, key: &str, value: Option<&AnyValue>, origin: usize) -> Option<Value> {
        let value = value.and_then(|v| v.value.as_ref());
        if key == INSTANCE_KEY
            && let Some(any_value::Value::StringValue(s)) = value
        {
            let id = s.trim().to_ascii_lowercase();
            if self.instances.contains_key(&id) {
                return Some(Value::Str(self.mark(Token::Instance(id))));
            }
        }
        let paths = match key_rule(key) {
            KeyRule::Drop => return None,
            KeyRule::Placeholder(p) => return Some(typed_placeholder(p, value)),
            KeyRule::Address => {
                if let Some(any_value::Value::StringValue(s)) = value {
                    let (host, port) = split_port(s);
                    if !is_loopback(host) {
                        let port = if port { ":[port]" } else { "" };
                        return Some(Value::Str(format!("[host]{port}")));
                    }
                }
                true
            }
            KeyRule::IdRef => {
                if let Some(any_value::Value::StringValue(s)) = value
                    && let Some(reference) = self.id_ref(key, s, origin)
                {
                    return Some(Value::Str(reference));
                }
                true
            }
            KeyRule::Text { paths } => paths,
        };
        Some(match value {
            None => Value::Empty,
            Some(any_value::Value::StringValue(s)) => Value::Str(self.text(s, paths)),
            Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
            Some(any_value::Value::IntValue(i)) => Value::Int(*i),
            Some(any_value::Value::DoubleValue(d)) => Value::Double(*d),
            Some(any_value::Value::BytesValue(b)) => Value::Bytes(b.clone()),
            Some(any_value::Value::StringValueStrindex(i)) => Value::Str(format!("[strindex {i}]")),
            Some(any_value::Value::ArrayValue(a)) => Value::Array(
                a.values
                    .iter()
                    .map(|v| self.value(key, Some(v), origin).unwrap_or(Value::Empty))
                    .collect(),
            ),
            Some(any_value::Value::KvlistValue(kvs)) => {
                let mut entries: Vec<(String, Value)> = kvs
                    .values
                    .iter()
                    .filter_map(|kv| {
                        let nested = format!("{key}.{}", kv.key);
                        Some((
                            kv.key.clone(),
                            self.value(&nested, kv.value.as_ref(), origin)?,
                        ))
                    })
                    .collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Map(entries)
            }
        })
    }

    /// Invariant 6: an id-valued attribute must name a span of the same trace (16 hex) or a
    /// trace of the data (32 hex). Returns the mark, or `None` for a value that is not an id.
    fn id_ref(&mut self, key: &str, value: &str, origin: usize) -> Option<String> {
        let is_hex = |n: usize| {
            value.len() == n
                && value
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let here = &self.raws[origin];
        if is_hex(16) {
            match self.span_index.get(value) {
                Some(&i) if self.raws[i].trace == here.trace => {
                    return Some(self.mark(Token::SpanRef(i)));
                }
                None if self.partial => return Some(format!("→{}", crate::MISSING_REF)),
                found => {
                    let elsewhere = found
                        .map(|&i| {
                            format!(
                                " (it is {} of trace {})",
                                self.raws[i].describe(),
                                self.raws[i].trace
                            )
                        })
                        .unwrap_or_default();
                    let members: Vec<usize> = (0..self.raws.len())
                        .filter(|&i| self.raws[i].trace == here.trace)
                        .collect();
                    self.unresolved.push(format!(
                        "{}: {key}={value} names no span of its trace {}{elsewhere}; that trace holds: {}",
                        here.describe(),
                        here.trace,
                        list_spans(self.raws, &members)
                    ));
                }
            }
        } else if is_hex(32) {
            if self.traces.contains(value) {
                return Some(self.mark(Token::TraceRef(value.to_owned())));
            }
            let mut traces: Vec<&str> = self.traces.iter().copied().collect();
            traces.sort_unstable();
            self.unresolved.push(format!(
                "{} in trace {}: {key}={value} names no trace of the data (traces: {})",
                here.describe(),
                here.trace,
                traces.join(", ")
            ));
        }
        None
    }

    fn attributes(&mut self, attrs: &[KeyValue], origin: usize) -> Vec<(String, Value)> {
        let mut out: Vec<(String, Value)> = attrs
            .iter()
            .filter_map(|kv| {
                Some((
                    kv.key.clone(),
                    self.value(&kv.key, kv.value.as_ref(), origin)?,
                ))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The redacted node of raw span `i` (no alias, no children yet).
    fn node(&mut self, i: usize) -> SpanNode {
        let raw = &self.raws[i];
        let span = raw.span;
        let status = span.status.as_ref();
        let mut events: Vec<(u64, usize, Event)> = span
            .events
            .iter()
            .enumerate()
            .map(|(n, e)| {
                let level =
                    e.attributes
                        .iter()
                        .find(|kv| kv.key == "level")
                        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                            any_value::Value::StringValue(s) => Some(s.clone()),
                            _ => None,
                        });
                let message = if EVENT_WITHOUT_MESSAGE_RE.is_match(&e.name) {
                    String::new()
                } else {
                    self.text(&e.name, true)
                };
                let attributes = self.attributes(&e.attributes, i);
                (
                    e.time_unix_nano,
                    n,
                    Event {
                        level,
                        message,
                        attributes,
                        dropped_attributes: e.dropped_attributes_count,
                    },
                )
            })
            .collect();
        events.sort_by_key(|(t, n, _)| (*t, *n));
        let links: Vec<Link> = span
            .links
            .iter()
            .map(|l| {
                let target = self
                    .span_index
                    .get(hex(&l.span_id).as_str())
                    .copied()
                    .filter(|&t| self.raws[t].trace == hex(&l.trace_id))
                    .map(|t| self.mark(Token::SpanRef(t)));
                Link {
                    target,
                    attributes: self.attributes(&l.attributes, i),
                }
            })
            .collect();
        SpanNode {
            alias: String::new(),
            show_alias: false,
            service: raw.service.to_owned(),
            name: self.text(&span.name, false),
            kind: SpanKind::from_otlp(span.kind),
            status: Status {
                code: StatusCode::from_otlp(status.map_or(0, |s| s.code)),
                message: status
                    .map(|s| self.text(&s.message, true))
                    .unwrap_or_default(),
            },
            attributes: self.attributes(&span.attributes, i),
            events: events.into_iter().map(|(_, _, e)| e).collect(),
            links,
            entry: self.entry(i),
            dropped: Dropped {
                attributes: span.dropped_attributes_count,
                events: span.dropped_events_count,
                links: span.dropped_links_count,
            },
            children: Vec::new(),
        }
    }

    /// The resource and scope of raw span `i` when its service enters the trace there: it is a
    /// root (or its parent never arrived), or its parent came from another resource or scope.
    fn entry(&mut self, i: usize) -> Option<Entry> {
        let raw = &self.raws[i];
        let parent = raw
            .parent
            .as_deref()
            .and_then(|p| self.span_index.get(p))
            .map(|&p| &self.raws[p])
            .filter(|p| p.trace == raw.trace);
        if parent.is_some_and(|p| p.resource == raw.resource && p.scope == raw.scope) {
            return None;
        }
        let resource: Vec<KeyValue> = raw
            .resource
            .map(|r| {
                r.attributes
                    .iter()
                    .filter(|kv| kv.key != "service.name")
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let scope = raw.scope.cloned().unwrap_or_default();
        Some(Entry {
            resource: self.attributes(&resource, i),
            scope: self.text(&scope.name, false),
            scope_version: self.text(&scope.version, false),
            scope_attributes: self.attributes(&scope.attributes, i),
        })
    }

    /// `s` with every mark replaced by its unnumbered form (`[run#]`, `→create_run`): the form
    /// sort keys are computed from.
    fn unnumbered(&self, s: &str) -> String {
        self.unnumbered_at(s, 0)
    }

    fn unnumbered_at(&self, s: &str, depth: usize) -> String {
        map_marks(s, |index| match &self.tokens[index] {
            Token::Run(_) => "[run#]".to_owned(),
            Token::Uuid(_) => "[uuid#]".to_owned(),
            Token::TraceRef(_) => "→trace#".to_owned(),
            Token::Instance(_) => "[instance#]".to_owned(),
            Token::SpanRef(_) if depth > 0 => "→span#".to_owned(),
            Token::SpanRef(i) => format!("→{}", self.unnumbered_at(&self.names[*i], depth + 1)),
        })
    }
}

/// `[duration]` → `[duration:int]`: the placeholder keeps the value's type, so an int that
/// became a string (or a double) is a snapshot change. An empty string and a missing value stay
/// as they are (`""`, nothing), so emptiness is never hidden.
fn typed_placeholder(placeholder: &str, value: Option<&any_value::Value>) -> Value {
    use any_value::Value as V;
    let ty = match value {
        None => return Value::Empty,
        Some(V::StringValue(s)) if s.is_empty() => return Value::Str(String::new()),
        Some(V::StringValue(_) | V::StringValueStrindex(_)) => "string",
        Some(V::IntValue(_)) => "int",
        Some(V::DoubleValue(_)) => "double",
        Some(V::BoolValue(_)) => "bool",
        Some(V::ArrayValue(_)) => "array",
        Some(V::KvlistValue(_)) => "map",
        Some(V::BytesValue(_)) => "bytes",
    };
    let name = placeholder.trim_end_matches(']');
    Value::Str(format!("{name}:{ty}]"))
}

fn split_port(address: &str) -> (&str, bool) {
    match address.rsplit_once(':') {
        Some((host, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && !host.ends_with(':') =>
        {
            (host, true)
        }
        _ => (address, false),
    }
}

fn redact_path(path: &str) -> String {
    match path.split('/').rfind(|c| !c.is_empty()) {
        Some(last) => format!("[path]/{last}"),
        None => path.to_owned(),
    }
}

/// `Regex::replace_all` with a fallible-free `FnMut` that may borrow mutable state.
fn replace(re: &Regex, s: &str, mut f: impl FnMut(&Captures<'_>) -> String) -> String {
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for c in re.captures_iter(s) {
        let m = c.get(0).expect("group 0 always matches");
        out.push_str(&s[last..m.start()]);
        out.push_str(&f(&c));
        last = m.end();
    }
    out.push_str(&s[last..]);
    out
}

/// Replaces every `MARK_START index MARK_END` of `s` by `f(index)`.
fn map_marks(s: &str, mut f: impl FnMut(usize) -> String) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find(MARK_START) {
        out.push_str(&rest[..start]);
        let after = &rest[start + MARK_START.len_utf8()..];
        let end = after.find(MARK_END).expect("marks are balanced");
        out.push_str(&f(after[..end].parse().expect("a mark holds an index")));
        rest = &after[end + MARK_END.len_utf8()..];
    }
    out.push_str(rest);
    out
}

/// Applies `f` to every redacted string of `node` (not its children) in render order: name,
/// status message, attribute values, the entry (resource values, scope), then each event
/// (message, values) and link (target, values).
fn map_strings(node: &mut SpanNode, f: &mut impl FnMut(&str) -> String) {
    fn value(v: &mut Value, f: &mut impl FnMut(&str) -> String) {
        match v {
            Value::Str(s) => *s = f(s),
            Value::Array(items) => items.iter_mut().for_each(|i| value(i, f)),
            Value::Map(entries) => entries.iter_mut().for_each(|(_, v)| value(v, f)),
            Value::Int(_) | Value::Double(_) | Value::Bool(_) | Value::Bytes(_) | Value::Empty => {}
        }
    }
    node.name = f(&node.name);
    node.status.message = f(&node.status.message);
    node.attributes.iter_mut().for_each(|(_, v)| value(v, f));
    if let Some(entry) = &mut node.entry {
        entry.resource.iter_mut().for_each(|(_, v)| value(v, f));
        entry.scope = f(&entry.scope);
        entry.scope_version = f(&entry.scope_version);
        entry
            .scope_attributes
            .iter_mut()
            .for_each(|(_, v)| value(v, f));
    }
    for e in &mut node.events {
        e.message = f(&e.message);
        e.attributes.iter_mut().for_each(|(_, v)| value(v, f));
    }
    for l in &mut node.links {
        if let Some(t) = &mut l.target {
            *t = f(t);
        }
        l.attributes.iter_mut().for_each(|(_, v)| value(v, f));
    }
}

// ---------------------------------------------------------------------------------------------
// Tree building, sorting, numbering

/// A redacted span (strings still hold marks) with its sorted children and stable key.
struct Draft {
    raw: usize,
    node: SpanNode,
    children: Vec<Draft>,
    key: String,
}

fn build(raws: &[Raw<'_>], options: &Options) -> Result<SpanForest, TreeError> {
    let mut redactor = Redactor::new(raws, options);
    let mut nodes: Vec<Option<SpanNode>> =
        (0..raws.len()).map(|i| Some(redactor.node(i))).collect();
    if !redactor.unresolved.is_empty() {
        let mut unresolved = std::mem::take(&mut redactor.unresolved);
        unresolved.sort();
        return Err(TreeError::UnresolvedReferences(unresolved));
    }
    redactor.names = nodes.iter().flatten().map(|n| n.name.clone()).collect();
    let redactor = redactor;
    for node in nodes.iter_mut().flatten() {
        node.links
            .sort_by_cached_key(|l| redactor.unnumbered(&render::link_line(l)));
    }

    let mut children: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, r) in raws.iter().enumerate() {
        if let Some(parent) = &r.parent {
            children
                .entry((r.trace.as_str(), parent.as_str()))
                .or_default()
                .push(i);
        }
    }
    let mut assembler = Assembler {
        raws,
        redactor: &redactor,
        children,
        nodes,
    };
    let mut traces: Vec<(String, Vec<Draft>)> = group_by_trace(raws)
        .into_iter()
        .map(|(trace, members)| {
            let mut roots: Vec<Draft> = members
                .iter()
                .filter(|&&i| raws[i].parent.is_none())
                .map(|&i| assembler.draft(i))
                .collect();
            roots.sort_by(|a, b| assembler.order(a, b));
            (trace.to_owned(), roots)
        })
        .collect();

    // Every span with a parent hangs below a root unless the parent links form a cycle.
    let mut cycles: Vec<String> = (0..raws.len())
        .filter(|&i| assembler.nodes[i].is_some())
        .map(|i| {
            let parent = raws[i].parent.as_deref().unwrap_or_default();
            format!(
                "{} in trace {}: its parent {parent} is part of a parent cycle",
                raws[i].describe(),
                raws[i].trace
            )
        })
        .collect();
    if !cycles.is_empty() {
        cycles.sort();
        return Err(TreeError::MalformedSpans(cycles));
    }

    let tie = |roots: &[Draft]| roots.iter().map(|r| assembler.tie(r)).min();
    let key = |roots: &[Draft]| {
        roots
            .iter()
            .map(|r| r.key.as_str())
            .collect::<Vec<_>>()
            .join("\u{3}")
    };
    traces.sort_by(|a, b| {
        key(&a.1)
            .cmp(&key(&b.1))
            .then_with(|| tie(&a.1).cmp(&tie(&b.1)))
            .then_with(|| a.0.cmp(&b.0))
    });

    Ok(number(raws, &redactor, traces))
}

/// Builds the sorted subtrees, taking each redacted node out of `nodes` exactly once.
struct Assembler<'a, 'r> {
    raws: &'a [Raw<'a>],
    redactor: &'r Redactor<'a>,
    children: HashMap<(&'a str, &'a str), Vec<usize>>,
    nodes: Vec<Option<SpanNode>>,
}

impl Assembler<'_, '_> {
    fn draft(&mut self, i: usize) -> Draft {
        let node = self.nodes[i].take().expect("each span is placed once");
        let raw = &self.raws[i];
        let kids = self
            .children
            .get(&(raw.trace.as_str(), raw.id.as_str()))
            .cloned()
            .unwrap_or_default();
        let mut kids: Vec<Draft> = kids.into_iter().map(|k| self.draft(k)).collect();
        kids.sort_by(|a, b| self.order(a, b));
        let kids = self.causal(kids);
        let key = stable_key(&node, &kids, self.redactor);
        Draft {
            raw: i,
            node,
            children: kids,
            key,
        }
    }

    /// Sibling order: the stable key; start time and raw id only break ties between siblings
    /// that render identically.
    fn order(&self, a: &Draft, b: &Draft) -> std::cmp::Ordering {
        a.key
            .cmp(&b.key)
            .then_with(|| self.tie(a).cmp(&self.tie(b)))
    }

    /// Siblings sorted by [`Self::order`], reordered so that a span that ended before a
    /// sibling of the same process started comes first: each next one is the first (by the
    /// stable key) of those that no remaining sibling is known to precede.
    fn causal(&self, mut sorted: Vec<Draft>) -> Vec<Draft> {
        let mut out = Vec::with_capacity(sorted.len());
        while !sorted.is_empty() {
            let next = (0..sorted.len())
                .find(|&k| !sorted.iter().any(|o| self.precedes(o.raw, sorted[k].raw)))
                .expect("'ended before started' has no cycle");
            out.push(sorted.remove(next));
        }
        out
    }

    /// Whether raw span `a` is known to have happened before `b`: both from one process (the
    /// same resource, so one clock), and `a` ended no later than `b` started (and started
    /// earlier, so two zero-length spans at one instant stay concurrent).
    fn precedes(&self, a: usize, b: usize) -> bool {
        let (a, b) = (&self.raws[a], &self.raws[b]);
        a.resource == b.resource
            && a.span.end_time_unix_nano <= b.span.start_time_unix_nano
            && a.span.start_time_unix_nano < b.span.start_time_unix_nano
    }

    fn tie(&self, d: &Draft) -> (u64, &str) {
        (
            self.raws[d.raw].span.start_time_unix_nano,
            self.raws[d.raw].id.as_str(),
        )
    }
}

/// The sort key of a span whose children are already sorted (see "Structure" above).
fn stable_key(node: &SpanNode, children: &[Draft], redactor: &Redactor<'_>) -> String {
    let mut plain = node.clone();
    map_strings(&mut plain, &mut |s| redactor.unnumbered(s));
    let mut key = format!(
        "{}\u{1}{}\u{1}{}",
        plain.service,
        plain.name,
        render::span_line_rest(&plain)
    );
    for line in render::detail_lines(&plain) {
        key.push('\u{1}');
        key.push_str(&line);
    }
    for child in children {
        key.push('\u{2}');
        key.push_str(&child.key);
    }
    key
}

/// Assigns `trace#N`, `span#N`, `[run#N]`, `[uuid#N]` in render order and resolves every mark.
fn number(
    raws: &[Raw<'_>],
    redactor: &Redactor<'_>,
    traces: Vec<(String, Vec<Draft>)>,
) -> SpanForest {
    let mut span_alias: HashMap<usize, String> = HashMap::new();
    let mut trace_alias: HashMap<String, String> = HashMap::new();
    fn alias_spans(d: &Draft, aliases: &mut HashMap<usize, String>) {
        aliases.insert(d.raw, format!("span#{}", aliases.len() + 1));
        d.children.iter().for_each(|c| alias_spans(c, aliases));
    }
    for (n, (trace, roots)) in traces.iter().enumerate() {
        trace_alias.insert(trace.clone(), format!("trace#{}", n + 1));
        roots.iter().for_each(|r| alias_spans(r, &mut span_alias));
    }
    let mut name_counts: HashMap<(&str, &str), usize> = HashMap::new();
    for (r, name) in raws.iter().zip(&redactor.names) {
        *name_counts
            .entry((r.trace.as_str(), name.as_str()))
            .or_default() += 1;
    }
    let mut numbering = Numbering {
        raws,
        redactor,
        span_alias,
        trace_alias,
        name_counts,
        runs: HashMap::new(),
        uuids: HashMap::new(),
        instances: HashMap::new(),
        show_alias: HashSet::new(),
    };

    let mut resolved: Vec<(String, Vec<Draft>)> = Vec::new();
    for (trace, mut roots) in traces {
        fn resolve(d: &mut Draft, numbering: &mut Numbering<'_>) {
            let trace = numbering.raws[d.raw].trace.as_str();
            map_strings(&mut d.node, &mut |s| numbering.resolve(s, trace, 0));
            d.children.iter_mut().for_each(|c| resolve(c, numbering));
        }
        roots.iter_mut().for_each(|r| resolve(r, &mut numbering));
        resolved.push((trace, roots));
    }

    fn finish(d: Draft, numbering: &Numbering<'_>) -> SpanNode {
        let mut node = d.node;
        node.alias = numbering.span_alias[&d.raw].clone();
        node.show_alias = numbering.show_alias.contains(&d.raw);
        node.children = d
            .children
            .into_iter()
            .map(|c| finish(c, numbering))
            .collect();
        node
    }
    SpanForest {
        traces: resolved
            .into_iter()
            .map(|(trace, roots)| Trace {
                alias: numbering.trace_alias[&trace].clone(),
                roots: roots.into_iter().map(|r| finish(r, &numbering)).collect(),
            })
            .collect(),
    }
}

/// Numbering state while resolving marks in render order.
struct Numbering<'a> {
    raws: &'a [Raw<'a>],
    redactor: &'a Redactor<'a>,
    span_alias: HashMap<usize, String>,
    trace_alias: HashMap<String, String>,
    /// (trace, marked span name) → how many spans of that trace carry it.
    name_counts: HashMap<(&'a str, &'a str), usize>,
    runs: HashMap<String, usize>,
    uuids: HashMap<String, usize>,
    instances: HashMap<String, usize>,
    show_alias: HashSet<usize>,
}

impl Numbering<'_> {
    fn resolve(&mut self, s: &str, trace: &str, depth: usize) -> String {
        let (raws, redactor) = (self.raws, self.redactor);
        map_marks(s, |index| match &redactor.tokens[index] {
            Token::Run(uuid) => {
                let next = self.runs.len() + 1;
                format!("[run#{}]", self.runs.entry(uuid.clone()).or_insert(next))
            }
            Token::Uuid(uuid) => {
                let next = self.uuids.len() + 1;
                format!("[uuid#{}]", self.uuids.entry(uuid.clone()).or_insert(next))
            }
            Token::TraceRef(t) => format!("→{}", self.trace_alias[t]),
            Token::Instance(id) if redactor.instances[id] => "[instance#*]".to_owned(),
            Token::Instance(id) => {
                let next = self.instances.len() + 1;
                format!(
                    "[instance#{}]",
                    self.instances.entry(id.clone()).or_insert(next)
                )
            }
            Token::SpanRef(i) => {
                let target = &raws[*i];
                let alias = self.span_alias[i].clone();
                if depth > 0 {
                    self.show_alias.insert(*i);
                    return format!("→{alias}");
                }
                let name = self.resolve(&redactor.names[*i], &target.trace, depth + 1);
                if target.trace == trace
                    && self.name_counts[&(target.trace.as_str(), redactor.names[*i].as_str())] == 1
                {
                    format!("→{name}")
                } else {
                    self.show_alias.insert(*i);
                    format!("→{name}({alias})")
                }
            }
        })
    }
}
