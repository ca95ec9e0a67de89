//! Queries over the kept spans: the [`Query`] both sides share (it is the query string of
//! `GET /v1/traces`), the span filter it compiles to, and the wait-until logic behind the
//! long poll.
//!
//! Waiting never polls: a waiter sleeps on the store's `watch` channel, a timer for the
//! moment the quiet period would be over, the deadline, and the shutdown signal — whichever
//! comes first — and only looks at batches it has not counted yet.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::store::{Batch, Store};

/// How long a wait lasts when the query names no `timeout_ms`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait the receiver grants; larger `timeout_ms` values are capped to this.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// What to ask the receiver for: filters (all must match) and, for
/// [`ReceiverClient::wait`](super::ReceiverClient::wait), a condition to wait for.
///
/// The fields are the query string of `GET /v1/traces`. Build one with the methods:
///
/// ```
/// # use std::time::Duration;
/// # use otlp_receiver::Query;
/// let q = Query::new().service_name("metis-engine-generic").min_spans(3).timeout(Duration::from_secs(5));
/// assert_eq!(q.timeout_ms, Some(5000));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Query {
    /// Only spans of this trace (32 hex digits).
    pub trace_id: Option<String>,
    /// Only spans whose resource has this `service.name`.
    pub service_name: Option<String>,
    /// Only spans with this name.
    pub span_name: Option<String>,
    /// Wait until at least this many spans match.
    pub min_spans: Option<usize>,
    /// Then also wait until no trace export has arrived for this many milliseconds.
    pub quiet_ms: Option<u64>,
    /// Give up waiting after this many milliseconds ([`DEFAULT_TIMEOUT`] if unset, at most
    /// [`MAX_TIMEOUT`]); the answer then holds what matched so far.
    pub timeout_ms: Option<u64>,
}

impl Query {
    /// Everything, without waiting.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Only spans of this trace (hex, as `TraceId`'s `Display` writes it).
    #[must_use]
    pub fn trace_id(mut self, trace_id: impl Into<String>) -> Self {
        self.trace_id = Some(trace_id.into());
        self
    }

    /// Only spans whose resource has this `service.name`.
    #[must_use]
    pub fn service_name(mut self, service_name: impl Into<String>) -> Self {
        self.service_name = Some(service_name.into());
        self
    }

    /// Only spans with this name.
    #[must_use]
    pub fn span_name(mut self, span_name: impl Into<String>) -> Self {
        self.span_name = Some(span_name.into());
        self
    }

    /// Wait until at least `n` spans match.
    #[must_use]
    pub fn min_spans(mut self, n: usize) -> Self {
        self.min_spans = Some(n);
        self
    }

    /// Then also wait until no trace export has arrived for `quiet`.
    #[must_use]
    pub fn quiet(mut self, quiet: Duration) -> Self {
        self.quiet_ms = Some(millis(quiet));
        self
    }

    /// Give up waiting after `timeout`.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = Some(millis(timeout));
        self
    }

    /// The same filters without a wait condition.
    #[must_use]
    pub fn filters_only(&self) -> Self {
        Self {
            trace_id: self.trace_id.clone(),
            service_name: self.service_name.clone(),
            span_name: self.span_name.clone(),
            ..Self::default()
        }
    }

    /// The timeout the receiver applies to this query.
    #[must_use]
    pub fn effective_timeout(&self) -> Duration {
        self.timeout_ms
            .map_or(DEFAULT_TIMEOUT, Duration::from_millis)
            .min(MAX_TIMEOUT)
    }

    /// The filters as `key=value` pairs, for messages (`"service_name=api span_name=x"`,
    /// or `"no filter"`).
    #[must_use]
    pub fn describe_filters(&self) -> String {
        let pairs: Vec<String> = [
            ("trace_id", &self.trace_id),
            ("service_name", &self.service_name),
            ("span_name", &self.span_name),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect();
        if pairs.is_empty() {
            "no filter".to_owned()
        } else {
            pairs.join(" ")
        }
    }
}

/// Describes the wait condition: `at least 3 spans matching service_name=api, then 200ms
/// without new trace exports`.
impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.min_spans {
            Some(1) => write!(f, "at least 1 span")?,
            Some(n) => write!(f, "at least {n} spans")?,
            None => write!(f, "spans")?,
        }
        if self.trace_id.is_some() || self.service_name.is_some() || self.span_name.is_some() {
            write!(f, " matching {}", self.describe_filters())?;
        }
        if let Some(q) = self.quiet_ms {
            write!(f, ", then {q}ms without new trace exports")?;
        }
        Ok(())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A compiled [`Query`] filter.
#[derive(Debug, Default, Clone)]
pub(crate) struct Filter {
    trace_id: Option<Vec<u8>>,
    service_name: Option<String>,
    span_name: Option<String>,
}

impl Filter {
    /// Compiles the filters of `query`; the error says what is wrong with them.
    pub(crate) fn new(query: &Query) -> Result<Self, String> {
        let trace_id = match &query.trace_id {
            None => None,
            Some(hex) => Some(decode_trace_id(hex).ok_or_else(|| {
                format!("trace_id {hex:?} is not a trace id (32 hex digits, not all zero)")
            })?),
        };
        Ok(Self {
            trace_id,
            service_name: query.service_name.clone(),
            span_name: query.span_name.clone(),
        })
    }

    fn filters_spans(&self) -> bool {
        self.trace_id.is_some() || self.span_name.is_some()
    }

    fn resource_matches(&self, rs: &ResourceSpans) -> bool {
        self.service_name
            .as_deref()
            .is_none_or(|want| service_name(rs) == Some(want))
    }

    fn span_matches(&self, span: &Span) -> bool {
        self.trace_id.as_deref().is_none_or(|t| span.trace_id == t)
            && self.span_name.as_deref().is_none_or(|n| span.name == n)
    }

    /// How many spans in `resource_spans` match.
    pub(crate) fn count(&self, resource_spans: &[ResourceSpans]) -> usize {
        resource_spans
            .iter()
            .filter(|rs| self.resource_matches(rs))
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .filter(|s| self.span_matches(s))
            .count()
    }

    /// The matching spans of `batches`, in arrival order, inside copies of their resource and
    /// scope wrappers; wrappers left without spans are dropped. Without span-level filters,
    /// matching `ResourceSpans` are returned exactly as received.
    pub(crate) fn select(&self, batches: &[Arc<Batch>]) -> TracesData {
        let resource_spans = batches
            .iter()
            .flat_map(|b| &b.resource_spans)
            .filter(|rs| self.resource_matches(rs))
            .filter_map(|rs| {
                if !self.filters_spans() {
                    return Some(rs.clone());
                }
                let scope_spans: Vec<ScopeSpans> = rs
                    .scope_spans
                    .iter()
                    .filter_map(|ss| {
                        let spans: Vec<Span> = ss
                            .spans
                            .iter()
                            .filter(|s| self.span_matches(s))
                            .cloned()
                            .collect();
                        (!spans.is_empty()).then(|| ScopeSpans {
                            scope: ss.scope.clone(),
                            spans,
                            schema_url: ss.schema_url.clone(),
                        })
                    })
                    .collect();
                (!scope_spans.is_empty()).then(|| ResourceSpans {
                    resource: rs.resource.clone(),
                    scope_spans,
                    schema_url: rs.schema_url.clone(),
                })
            })
            .collect();
        TracesData { resource_spans }
    }
}

/// The `service.name` resource attribute, if it is a string.
#[must_use]
pub fn service_name(resource_spans: &ResourceSpans) -> Option<&str> {
    resource_spans
        .resource
        .as_ref()?
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
}

/// Number of spans in `data`.
#[must_use]
pub fn span_count(data: &TracesData) -> usize {
    super::store::span_count(&data.resource_spans)
}

pub(crate) fn decode_trace_id(hex: &str) -> Option<Vec<u8>> {
    let hex = hex.as_bytes();
    if hex.len() != 32 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16);
    let bytes: Option<Vec<u8>> = hex
        .chunks(2)
        .map(|pair| Some((nibble(pair[0])? * 16 + nibble(pair[1])?) as u8))
        .collect();
    bytes.filter(|b| b.iter().any(|&x| x != 0))
}

/// When a wait is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The condition holds.
    Ok,
    /// The deadline passed first.
    TimedOut,
    /// The receiver is shutting down.
    ShuttingDown,
}

/// What a wait saw: the batches it counted (a consistent prefix of the store) and how many
/// spans in them match.
#[derive(Debug)]
pub(crate) struct Waited {
    pub(crate) outcome: Outcome,
    pub(crate) batches: Vec<Arc<Batch>>,
    pub(crate) matched: usize,
}

/// Waits until `query`'s condition holds for the spans `filter` matches, its timeout passes,
/// or `shutdown` turns true. A query without `min_spans` and `quiet_ms` returns at once.
pub(crate) async fn wait(
    store: &Store,
    filter: &Filter,
    query: &Query,
    mut shutdown: watch::Receiver<bool>,
) -> Waited {
    let deadline = Instant::now() + query.effective_timeout();
    let min_spans = query.min_spans.unwrap_or(0);
    let quiet = query.quiet_ms.map(Duration::from_millis);
    let mut changes = store.subscribe();
    let mut generation = None;
    let mut batches: Vec<Arc<Batch>> = Vec::new();
    let mut matched = 0;
    loop {
        changes.borrow_and_update();
        let view = store.view(generation, batches.len());
        if generation != Some(view.generation) {
            generation = Some(view.generation);
            batches.clear();
            matched = 0;
        }
        matched += view
            .batches
            .iter()
            .map(|b| filter.count(&b.resource_spans))
            .sum::<usize>();
        batches.extend(view.batches);

        let now = Instant::now();
        let done = |outcome| Waited {
            outcome,
            batches: batches.clone(),
            matched,
        };
        let wake_at = if matched >= min_spans {
            match quiet {
                None => return done(Outcome::Ok),
                Some(quiet) => {
                    let quiet_at = view.last_activity + quiet;
                    if now >= quiet_at {
                        return done(Outcome::Ok);
                    }
                    quiet_at.min(deadline)
                }
            }
        } else {
            deadline
        };
        if now >= deadline {
            return done(Outcome::TimedOut);
        }
        tokio::select! {
            _ = changes.changed() => {}
            () = tokio::time::sleep_until(wake_at) => {} // the wait's own deadline, not synchronisation
            _ = shutdown.wait_for(|stop| *stop) => return done(Outcome::ShuttingDown),
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt as _;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    use super::*;

    fn span(trace: u8, id: u8, name: &str) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            name: name.to_owned(),
            ..Span::default()
        }
    }

    fn resource_spans(service: &str, spans: Vec<Span>) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".to_owned(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue(service.to_owned())),
                    }),
                    ..KeyValue::default()
                }],
                ..Resource::default()
            }),
            scope_spans: vec![
                ScopeSpans {
                    spans,
                    ..ScopeSpans::default()
                },
                ScopeSpans::default(),
            ],
            schema_url: String::new(),
        }
    }

    /// Two exports: `api` with spans a, b in trace 1; `engine` with c in trace 1, d in trace 2.
    fn store() -> Store {
        let store = Store::default();
        store.ingest_traces(vec![resource_spans(
            "api",
            vec![span(1, 1, "a"), span(1, 2, "b")],
        )]);
        store.ingest_traces(vec![resource_spans(
            "engine",
            vec![span(1, 3, "c"), span(2, 4, "d")],
        )]);
        store
    }

    /// Selects with `query` and compares `service:span,…` in output order.
    #[track_caller]
    fn check(query: Query, expected: &str) {
        let store = store();
        let filter = Filter::new(&query).expect("valid filter");
        let data = filter.select(&store.view(None, 0).batches);
        let got: Vec<String> = data
            .resource_spans
            .iter()
            .flat_map(|rs| {
                assert!(
                    rs.scope_spans.iter().all(|ss| !ss.spans.is_empty()) || !filter.filters_spans(),
                    "empty scope wrapper kept for {query:?}"
                );
                let service = service_name(rs).unwrap_or("?").to_owned();
                rs.scope_spans
                    .iter()
                    .flat_map(|ss| &ss.spans)
                    .map(move |s| format!("{service}:{}", s.name))
            })
            .collect();
        assert_eq!(got.join(","), expected, "spans selected by {query:?}");
        assert_eq!(
            filter.count(
                &store
                    .view(None, 0)
                    .batches
                    .iter()
                    .flat_map(|b| b.resource_spans.clone())
                    .collect::<Vec<_>>()
            ),
            span_count(&data),
            "count and select disagree for {query:?}"
        );
    }

    #[test]
    fn filters() {
        check(Query::new(), "api:a,api:b,engine:c,engine:d");
        check(Query::new().service_name("engine"), "engine:c,engine:d");
        check(Query::new().service_name("nobody"), "");
        check(
            Query::new().trace_id("01".repeat(16)),
            "api:a,api:b,engine:c",
        );
        check(Query::new().trace_id("02".repeat(16)), "engine:d");
        check(Query::new().span_name("b"), "api:b");
        check(
            Query::new()
                .trace_id("01".repeat(16))
                .service_name("engine"),
            "engine:c",
        );
        check(Query::new().span_name("d").service_name("api"), "");
    }

    #[test]
    fn unfiltered_select_keeps_wrappers_as_received() {
        let store = store();
        let data = Filter::default().select(&store.view(None, 0).batches);
        assert_eq!(data.resource_spans.len(), 2);
        assert_eq!(data.resource_spans[0].scope_spans.len(), 2);
    }

    #[test]
    fn bad_trace_ids_are_rejected() {
        for bad in [
            String::new(),
            "abc".to_owned(),
            "0".repeat(32),
            "zz".repeat(16),
            "01".repeat(17),
        ] {
            let err = Filter::new(&Query::new().trace_id(&bad)).expect_err(&bad);
            assert!(err.contains("trace_id"), "{err}");
        }
        assert!(Filter::new(&Query::new().trace_id("0A".repeat(16))).is_ok());
    }

    #[test]
    fn describes_itself() {
        let q = Query::new()
            .service_name("api")
            .span_name("x")
            .min_spans(3)
            .quiet(Duration::from_millis(200));
        assert_eq!(
            q.to_string(),
            "at least 3 spans matching service_name=api span_name=x, then 200ms without new trace exports"
        );
        assert_eq!(
            Query::new().quiet(Duration::from_millis(50)).to_string(),
            "spans, then 50ms without new trace exports"
        );
        assert_eq!(Query::new().min_spans(1).to_string(), "at least 1 span");
        assert_eq!(Query::new().describe_filters(), "no filter");
        assert_eq!(
            Query::new()
                .timeout(Duration::from_secs(999))
                .effective_timeout(),
            MAX_TIMEOUT
        );
    }

    /// A shutdown signal that never fires (a dropped sender counts as shutdown).
    fn no_shutdown() -> watch::Receiver<bool> {
        static NEVER: std::sync::LazyLock<watch::Sender<bool>> =
            std::sync::LazyLock::new(|| watch::Sender::new(false));
        NEVER.subscribe()
    }

    #[tokio::test]
    async fn wait_wakes_on_ingest() {
        let store = Store::default();
        let query = Query::new().service_name("api").min_spans(2);
        let filter = Filter::new(&query).unwrap();
        let wait = wait(&store, &filter, &query, no_shutdown());
        tokio::pin!(wait);
        assert!((&mut wait).now_or_never().is_none(), "nothing to see yet");
        store.ingest_traces(vec![resource_spans("api", vec![span(1, 1, "a")])]);
        assert!((&mut wait).now_or_never().is_none(), "one span is not two");
        store.ingest_traces(vec![resource_spans("other", vec![span(1, 2, "b")])]);
        store.ingest_traces(vec![resource_spans("api", vec![span(1, 3, "c")])]);
        let waited = (&mut wait)
            .now_or_never()
            .expect("ready as soon as the second span is in, without a timer");
        assert_eq!(waited.outcome, Outcome::Ok);
        assert_eq!(waited.matched, 2);
        assert_eq!(waited.batches.len(), 3);
    }

    #[tokio::test]
    async fn wait_times_out_with_what_it_saw() {
        let store = store();
        let query = Query::new()
            .service_name("api")
            .min_spans(5)
            .timeout(Duration::from_millis(100));
        let started = Instant::now();
        let waited = wait(&store, &Filter::new(&query).unwrap(), &query, no_shutdown()).await;
        assert_eq!(waited.outcome, Outcome::TimedOut);
        assert_eq!(waited.matched, 2);
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn quiet_waits_for_the_last_ingest_to_age() {
        let store = store();
        let query = Query::new().min_spans(4).quiet(Duration::from_millis(100));
        let waited = wait(&store, &Filter::new(&query).unwrap(), &query, no_shutdown()).await;
        assert_eq!(waited.outcome, Outcome::Ok);
        let age = store
            .stats()
            .last_ingest_age_ms
            .expect("an ingest happened");
        assert!(age >= 100, "returned {age}ms after the last ingest");
    }

    #[tokio::test]
    async fn clear_restarts_the_count() {
        let store = store();
        let query = Query::new().min_spans(5).timeout(Duration::from_millis(50));
        let filter = Filter::new(&query).unwrap();
        let wait = wait(&store, &filter, &query, no_shutdown());
        tokio::pin!(wait);
        assert!((&mut wait).now_or_never().is_none());
        store.clear();
        store.ingest_traces(vec![resource_spans("api", vec![span(1, 1, "a")])]);
        assert!(
            (&mut wait).now_or_never().is_none(),
            "4 cleared + 1 new is not 5"
        );
        let waited = wait.await;
        assert_eq!(waited.outcome, Outcome::TimedOut);
        assert_eq!(waited.matched, 1);
        assert_eq!(store.stats().spans, 1);
        assert_eq!(store.stats().trace_exports, 3);
    }

    #[tokio::test]
    async fn shutdown_ends_a_wait() {
        let store = Store::default();
        let (stop, stopped) = watch::channel(false);
        let query = Query::new().min_spans(1);
        let filter = Filter::new(&query).unwrap();
        let wait = wait(&store, &filter, &query, stopped);
        tokio::pin!(wait);
        assert!((&mut wait).now_or_never().is_none());
        stop.send_replace(true);
        let waited = (&mut wait).now_or_never().expect("ends at once");
        assert_eq!(waited.outcome, Outcome::ShuttingDown);
    }
}
