//! OTLP spans → normalised [`SpanForest`]: invariants, the redaction policy, stable sorting
//! and renumbering. This module owns the **one** redaction policy of the suite; every rule is
//! listed here and nowhere else. One concern per file: [`invariants`] (collecting the spans,
//! the structural checks), [`redact`] (the policy below, applied), [`build`] (linking, order,
//! numbering); this file holds the options, the errors and the entry points.
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
//! **Resources and scopes** are listed once, in the legend above the traces, and each span where
//! a service enters a trace names its legend entry (see the rendered format in the crate docs);
//! their attributes are redacted by the rules below. `service.instance.id` → `[SERVICE#N]`,
//! numbered per service in render order (so also that id inside any string): the API's first
//! instance is `[metis-api#1]` whichever service's spans come first. The services of
//! [`Options::unordered_instances`] read `[SERVICE#*]`.
//!
//! **Dropped entirely (SDK noise).** Span and event attributes `code.*`, `thread.*`, `busy_ns`, `idle_ns`,
//! `target`, and `level` on spans. On events `level` is taken out and shown before the message.
//! The name `tracing` gives an event without a message (`event src/x.rs:12`) becomes empty.
//! An event attribute equal, key and value, to one of its span's attributes is left out: the
//! span line above it already shows it (`tracing` copies a span's fields into its events).
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
//! | `service.version`, `telemetry.sdk.version`, `telemetry.distro.version` | `[version:<type>]` (a crate or SDK bump changes no tree) |
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
//! 3. UUIDs (any case) → `[NAME#N]` when the same UUID is the value of an attribute of an id
//!    family passed in ([`Options::id_family`]; the Metis harness passes `run_id` → `[run#N]`)
//!    anywhere in the data (so also inside span names such as `POST /runs/[run#1]/cancel`,
//!    event fields and paths), else `[uuid#N]`. Each family is numbered on its own.
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

mod build;
mod invariants;
mod redact;
mod rules;

use build::*;
use invariants::*;
use redact::*;
use rules::*;

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
    /// `[SERVICE#*]` instead of a number.
    pub unordered_instances: Vec<String>,
    /// Families of ids numbered on their own ([`Options::id_family`]), e.g. Metis's run ids.
    pub id_families: Vec<IdFamily>,
}

/// UUIDs named by one kind of attribute, numbered as a family of their own: with
/// `IdFamily { key: "run_id", name: "run" }` a UUID that is the value of a `run_id` (or
/// `*_run_id`) attribute anywhere in the data reads `[run#N]` wherever it occurs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdFamily {
    /// The attribute key (its last dotted segment is `key` or ends in `_key`).
    pub key: String,
    /// The placeholder's name: `[name#N]`.
    pub name: String,
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

    /// Render the instances of `service` as `[SERVICE#*]`: which of them handled a span depends
    /// on scheduling, so a number would make the tree timing-dependent. Assert the split in the
    /// scenario instead.
    pub fn unordered_instances(mut self, service: impl Into<String>) -> Self {
        self.unordered_instances.push(service.into());
        self
    }

    /// Number the UUIDs that are values of attribute `key` (or `*_key`) as a family of their
    /// own, `[name#N]`, wherever they occur (span names, paths, event fields) — the services'
    /// own knowledge of which ids matter (a harness passes its policy in; with none, every
    /// UUID reads `[uuid#N]`). The first family whose key matches wins.
    pub fn id_family(mut self, key: impl Into<String>, name: impl Into<String>) -> Self {
        self.id_families.push(IdFamily {
            key: key.into(),
            name: name.into(),
        });
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
