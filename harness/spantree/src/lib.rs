//! Span trees: OTLP spans → normalised, sorted, renumbered trees → text for snapshot tests;
//! the library behind the e2e harness (`harness::tree` re-exports it) and the `spantree` CLI,
//! which renders, diffs and checks any OTLP/JSON dump (see `src/main.rs`). It carries none of
//! the harness's container and NATS dependencies.
//!
//! ```no_run
//! # fn demo(data: &opentelemetry_proto::tonic::trace::v1::TracesData, workdir: &str) -> Result<(), Box<dyn std::error::Error>> {
//! use spantree::{expect, Options, SpanForest};
//!
//! let forest = SpanForest::from_otlp(data, &Options::new().expect_traces(1).redact(workdir, "[workdir]"))?;
//! let text = forest.render(); // what a scenario hands to `insta::assert_snapshot!`
//! expect::no_span().named("workflow_cancel").check(&forest)?;
//! # Ok(()) }
//! ```
//!
//! - `model`: the tree types ([`SpanForest`], [`Trace`], [`SpanNode`], [`Value`], ...).
//! - `normalize`: [`SpanForest::from_otlp`] — the invariants ([`TreeError`]) and **the one
//!   redaction policy** of the suite, documented rule by rule at the top of
//!   `harness/spantree/src/normalize/mod.rs`; scenarios add literal replacements through
//!   [`Options::redact`].
//! - `render`: [`SpanForest::render`], the format below.
//! - [`parse`]: the format read back into the model ([`Rendered`]); `render(parse(s)) == s`
//!   for every committed snapshot. The book, `diff` and `review` read trees through it.
//! - [`expect`]: `tracing-mock`-style expectations for what a snapshot says poorly.
//! - [`view`]: how a dump becomes a snapshot's tree (options, which traces, census) as a
//!   text file, so `spantree diff --view` compares a dump with its snapshot as the test did.
//!
//! # Rendered format
//!
//! ```text
//! legend
//! metis-api
//! ├─ resource service.instance.id=[metis-api#1] service.version=[version:string]
//! │      telemetry.sdk.language=rust
//! └─ scope metis-api
//! metis-engine-generic
//! ├─ resource service.instance.id=[metis-engine-generic#1] service.version=[version:string]
//! │      telemetry.sdk.language=rust
//! └─ scope metis-engine-generic
//!
//! trace#1
//! metis-api  POST /runs  [server]  http.response.status_code=200 http.request.method=POST
//! │   http.route=/runs server.port=[port:int] url.path=/runs user_agent.original=reqwest/0.13
//! └─ create_run  run_id=[run#1] user_id=alice workflow_engine=generic workflow_type=SH
//!    ├─ event INFO "Run created and dispatched"
//!    └─ publish metis.runs.generic.1.SH.1  [producer]
//!       │    messaging.destination.name=metis.runs.generic.1.SH.1 messaging.system=nats
//!       └─ metis-engine-generic  workflow_run  [consumer]  !ERROR "workflow exited with status 3"
//!          │    error="exit status 3" state=EXECUTOR_ERROR api_trace_id=→create_run
//!          │   duration_ms=[duration:int] run_id=[run#1] user_id=alice workflow_type=SH
//!          ├─ event INFO phase state=initializing
//!          ├─ event INFO phase state=building
//!          ├─ event INFO phase state=executing
//!          ├─ event INFO phase state=running
//!          ├─ event INFO phase state=parsing
//!          ├─ event INFO phase state=updating_db
//!          └─ event INFO phase state=cleanup
//!
//! trace#2
//! metis-api  POST /runs/{run_id}/cancel  [server]  http.response.status_code=200
//! │   http.route=/runs/{run_id}/cancel url.path=/runs/[run#1]/cancel
//! └─ request_cancel  run_id=[run#1]
//!    └─ publish metis.cancel.[engine#1]  [producer]
//!       │    messaging.destination.name=metis.cancel.[engine#1]
//!       └─ metis-engine-generic  workflow_cancel  [consumer]  run_id=[run#1]
//! ```
//!
//! - A legend comes first when any span has a resource or instrumentation scope: the line
//!   `legend`, then for each distinct (service, resource, scope), in render order, its key on
//!   a line of its own and its `resource key=value…` (the resource's attributes but
//!   `service.name`, redacted like any) and `scope name[ version][ key=value…]` lines drawn
//!   under it (either left out when empty), then a blank line. The key is the service name,
//!   or `SERVICE#N` when the service has several entries (several instances, or scopes).
//!   `service.instance.id` reads `[SERVICE#N]`, numbered per service in render order, or
//!   `[SERVICE#*]` for a service whose instances are interchangeable (see
//!   [`Options::unordered_instances`]). A version bump changes only the legend.
//! - Each trace starts with a `trace#N` header line; traces are separated by one blank line;
//!   the text ends with a newline. A trace's roots start in column 0.
//! - One line per span, event and link, drawn with `├─ `/`└─ ` connectors and `│  `/`   `
//!   continuation. Under a span come first its events (time order), then its links, then
//!   its child spans (a child that ended before a sibling of the same process started comes
//!   before it; otherwise sorted by the stable key).
//! - A span line is `[service  ]name[  (span#N)][  [kind]][  status][  attributes]`, columns
//!   separated by two spaces. The service column is the legend key, shown where a service
//!   enters the trace (a root, or a span whose parent came from another resource or scope),
//!   and the service name where the data has no resource. The name is bare, or quoted like a
//!   string where it is empty, holds two spaces, a control character or an edge space, starts
//!   with a quote, or would read as another column (`"OK"`, `"run=1"`). `(span#N)` only when a reference
//!   elsewhere names the span by alias; the kind unless internal; the status unless unset
//!   (`OK`, `!ERROR "message"`, `!ERROR`); what the SDK dropped when anything was
//!   (`dropped(attributes=2,events=1)`; an event line ends in ` dropped(attributes=N)`).
//! - A span whose string attribute `lost` says what was lost stands in for a span that never
//!   arrived (the e2e harness's `kill engine` under the `publish` whose consumer was killed):
//!   its line shows `[lost: engine killed]` after the status instead of the attribute (unless
//!   the value could not read back: empty, holding `]`, two spaces, a control character or an
//!   edge space).
//! - The attribute column leads with what a reviewer looks for — `error`, `error.type`,
//!   `exception.type`, `exception.message`, `state`, `http.response.status_code`, in that
//!   order — then the rest sorted by key.
//! - No line passes 100 columns where it can be helped: a longer line continues on lines
//!   indented four columns past its drawing (under a `│` when lines follow below it), cut
//!   before a `key=` attribute outside quotes. A continuation that starts the attribute
//!   column is indented one column more (the two-space column gap). A quoted string longer
//!   than the room is cut inside, at a single space between two words, and continues on a
//!   line indented three columns past its drawing (a reader joins it back with that one
//!   space); only a word longer than the room runs past 100.
//! - Attributes are `key=value` separated by one space. Strings are bare unless
//!   they are empty, contain whitespace, `=`, a quote, a backslash or a control character, or
//!   would read as a number or bool — then they are quoted with `\"`, `\\`, `\n` escapes. So
//!   the string `"3"` and the int `3` differ. Ints and bools are bare, doubles always show a
//!   fraction (`3.0`), arrays are `[a,b]`, key/value lists `{k=v,k2=v2}`, bytes `0x…`.
//! - An event line is `event[ LEVEL][ message][ key=value…]`; the message follows the string
//!   rule (`event INFO phase state=initializing`, `event WARN "Run failed" error=boom`).
//! - A link line is `link →<span>[ key=value…]`, or `link [external]` when the linked span is
//!   not in the data.
//! - References (id-valued attributes, links) read `→<span name>` when the target is the only
//!   span of that name in the same trace, else `→<span name>(span#N)`; a trace id reads
//!   `→trace#N`.
//!
//! Identical structure renders byte-identically, whatever the arrival order.

pub mod diff;
pub mod dump;
pub mod expect;
pub mod lint;
mod model;
mod normalize;
pub mod parse;
pub mod registry;
mod render;
pub mod review;
pub mod semconv;
pub mod view;

#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

pub use expect::{ExpectationError, ExpectedEvent, ExpectedSpan};
pub use model::{
    Dropped, Entry, Event, Link, SpanForest, SpanKind, SpanNode, Status, StatusCode, Trace, Value,
};
pub use normalize::{Options, Redaction, TreeError};
/// The OTLP protobuf types the library reads (`opentelemetry-proto`'s `tonic` module).
pub use opentelemetry_proto::tonic as otlp;
pub use parse::{ParseError, Rendered, Shape, parse};

/// The name of the span [`with_missing_parents`] puts where a parent never arrived.
pub const MISSING_PARENT: &str = "[missing parent]";

/// What a reference to a span that never arrived reads, with [`Options::draw_orphans`].
pub const MISSING_REF: &str = "[missing]";

/// `data` plus, for every span id that spans name as their parent but that never arrived (in
/// their trace), one span standing in for it: named [`MISSING_PARENT`], of service
/// `[unknown]`, internal, a root (its own parent is unknown), from its children's first start
/// to their last end, no attributes. So a partial trace — one whose first spans were lost —
/// renders as a tree: `[unknown]  [missing parent]` with the spans that arrived below it.
#[must_use]
pub fn with_missing_parents(
    data: &opentelemetry_proto::tonic::trace::v1::TracesData,
) -> opentelemetry_proto::tonic::trace::v1::TracesData {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let spans = || {
        data.resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
    };
    let known: std::collections::HashSet<(&[u8], &[u8])> = spans()
        .map(|s| (s.trace_id.as_slice(), s.span_id.as_slice()))
        .collect();
    let mut missing: std::collections::BTreeMap<(Vec<u8>, Vec<u8>), (u64, u64)> =
        std::collections::BTreeMap::new();
    for s in spans() {
        if s.parent_span_id.is_empty()
            || known.contains(&(s.trace_id.as_slice(), s.parent_span_id.as_slice()))
        {
            continue;
        }
        let span = missing
            .entry((s.trace_id.clone(), s.parent_span_id.clone()))
            .or_insert((u64::MAX, 0));
        span.0 = span.0.min(s.start_time_unix_nano);
        span.1 = span.1.max(s.end_time_unix_nano);
    }
    let mut out = data.clone();
    if missing.is_empty() {
        return out;
    }
    out.resource_spans.push(ResourceSpans {
        resource: Some(Resource {
            attributes: vec![KeyValue {
                key: "service.name".to_owned(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("[unknown]".to_owned())),
                }),
                ..KeyValue::default()
            }],
            ..Resource::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: missing
                .into_iter()
                .map(|((trace_id, span_id), (start, end))| Span {
                    trace_id,
                    span_id,
                    name: MISSING_PARENT.to_owned(),
                    start_time_unix_nano: start,
                    end_time_unix_nano: end,
                    ..Span::default()
                })
                .collect(),
            ..ScopeSpans::default()
        }],
        schema_url: String::new(),
    });
    out
}

/// Removes the spans of successful read-only HTTP requests — a `GET` server span with no child
/// span, a status code below 400 and no error status — from `data`. Scenarios poll
/// (`GET /runs/{id}/status`, `/logs`, `/service-info`) a timing-dependent number of times, so
/// those traces would make a snapshot depend on timing; every request that does something (a
/// POST, or a GET that created child spans) is kept, and so is every GET that failed (a 4xx,
/// a 5xx, an error status): a failure is never hidden. The one exception are the health
/// probes (`GET /healthz`, `GET /readyz`): a scenario that waits for "not ready" polls them
/// until they fail, a timing-dependent number of times and with one of several reasons, and
/// asserts that answer itself.
#[must_use]
pub fn without_read_only_requests(
    data: &opentelemetry_proto::tonic::trace::v1::TracesData,
) -> opentelemetry_proto::tonic::trace::v1::TracesData {
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind as Kind;
    let parents: std::collections::HashSet<&[u8]> = data
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| s.parent_span_id.as_slice())
        .collect();
    let mut out = data.clone();
    for rs in &mut out.resource_spans {
        for ss in &mut rs.scope_spans {
            ss.spans.retain(|s| {
                let read_only = s.kind == Kind::Server as i32 && s.name.starts_with("GET ");
                let probe = matches!(s.name.as_str(), "GET /healthz" | "GET /readyz");
                !read_only || parents.contains(s.span_id.as_slice()) || (failed(s) && !probe)
            });
        }
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
    }
    out.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
    out
}

/// Whether a server span says its request failed: an error status, or an HTTP status code of
/// 400 or more (`http.response.status_code`).
fn failed(span: &opentelemetry_proto::tonic::trace::v1::Span) -> bool {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode as Code;
    let error = span
        .status
        .as_ref()
        .is_some_and(|st| st.code == Code::Error as i32);
    let code = span
        .attributes
        .iter()
        .find(|kv| kv.key == "http.response.status_code")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            V::IntValue(i) => Some(*i),
            V::StringValue(s) => s.parse().ok(),
            _ => None,
        });
    error || code.is_some_and(|c| c >= 400)
}

/// The distinct trace shapes of many similar units of work, with how often each occurs: for
/// each of `values`, the traces holding a span whose attribute `key` has that value are built
/// into a forest of their own (ids renumbered from 1 within it, with `options`' redactions and
/// trace count), rendered, and identical renderings are counted. The text lists each shape as
/// `shape#N ×COUNT` followed by its tree, most frequent first (ties by text), so a load test
/// pins "200 runs, one shape" instead of 200 copies — and a run that went differently shows
/// up as a shape of its own.
pub fn shape_census(
    data: &opentelemetry_proto::tonic::trace::v1::TracesData,
    key: &str,
    values: &[&str],
    options: &Options,
) -> Result<String, TreeError> {
    census_of(
        values.iter().map(|v| only_traces_with(data, key, &[v])),
        options,
    )
}

/// The census of units of work given as their own data each (see [`shape_census`]).
pub(crate) fn census_of(
    units: impl Iterator<Item = opentelemetry_proto::tonic::trace::v1::TracesData>,
    options: &Options,
) -> Result<String, TreeError> {
    let mut shapes: std::collections::BTreeMap<String, Shape> = std::collections::BTreeMap::new();
    for own in units {
        let forest = SpanForest::from_otlp(&own, options)?;
        shapes
            .entry(forest.render())
            .or_insert(Shape { count: 0, forest })
            .count += 1;
    }
    let mut sorted: Vec<(String, Shape)> = shapes.into_iter().collect();
    sorted.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
    Ok(parse::render_census(
        &sorted.into_iter().map(|(_, s)| s).collect::<Vec<_>>(),
    ))
}

/// Keeps only the traces that contain a span whose string attribute `key` has one of `values`
/// (e.g. the traces of particular runs, by `run_id`), dropping everything else in `data`.
#[must_use]
pub fn only_traces_with(
    data: &opentelemetry_proto::tonic::trace::v1::TracesData,
    key: &str,
    values: &[&str],
) -> opentelemetry_proto::tonic::trace::v1::TracesData {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    let wanted: std::collections::HashSet<&[u8]> = data
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .filter(|s| {
            s.attributes.iter().any(|kv| {
                kv.key == key
                    && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()), Some(V::StringValue(v)) if values.contains(&v.as_str()))
            })
        })
        .map(|s| s.trace_id.as_slice())
        .collect();
    keep_traces(data, &wanted)
}

/// Keeps only the traces whose root span (no parent) comes from service `service` (its
/// resource's `service.name`), e.g. the e2e harness's own trace of the faults it injected.
#[must_use]
pub fn only_traces_rooted_in(
    data: &opentelemetry_proto::tonic::trace::v1::TracesData,
    service: &str,
) -> opentelemetry_proto::tonic::trace::v1::TracesData {
    keep_traces(data, &trace_ids_rooted_in(data, service))
}

/// The trace ids of the roots from service `service`.
pub(crate) fn trace_ids_rooted_in<'a>(
    data: &'a opentelemetry_proto::tonic::trace::v1::TracesData,
    service: &str,
) -> std::collections::HashSet<&'a [u8]> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    data.resource_spans
        .iter()
        .filter(|r| {
            r.resource.as_ref().is_some_and(|res| {
                res.attributes.iter().any(|kv| {
                    kv.key == "service.name"
                        && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()), Some(V::StringValue(v)) if v == service)
                })
            })
        })
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .filter(|s| s.parent_span_id.is_empty())
        .map(|s| s.trace_id.as_slice())
        .collect()
}

/// `data` with only the spans of the traces in `wanted`.
pub(crate) fn keep_traces(
    data: &opentelemetry_proto::tonic::trace::v1::TracesData,
    wanted: &std::collections::HashSet<&[u8]>,
) -> opentelemetry_proto::tonic::trace::v1::TracesData {
    let mut out = data.clone();
    for rs in &mut out.resource_spans {
        for ss in &mut rs.scope_spans {
            ss.spans.retain(|s| wanted.contains(s.trace_id.as_slice()));
        }
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
    }
    out.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
    out
}
