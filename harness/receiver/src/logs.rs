//! Queries over the kept log records: `GET /v1/logs` answers OTLP/JSON `LogsData` (the
//! collector file-exporter encoding), filtered by service and trace, optionally after waiting
//! for a number of matching records — so a test can assert that a log record carries the
//! trace and span ids of the span it was written in.
//!
//! Waiting sleeps on the store's change channel (woken by every ingest) until the condition
//! holds or the deadline passes; it never polls.

use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::logs::v1::{LogsData, ResourceLogs, ScopeLogs};
use serde::{Deserialize, Serialize};

use super::query::{DEFAULT_TIMEOUT, MAX_TIMEOUT, decode_trace_id};
use super::store::Store;

/// The query string of `GET /v1/logs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogQuery {
    /// Only records of this trace (32 hex digits).
    pub trace_id: Option<String>,
    /// Only records whose resource has this `service.name`.
    pub service_name: Option<String>,
    /// Wait until at least this many records match.
    pub min_records: Option<usize>,
    /// Give up waiting after this many milliseconds (default 10 s, at most 120 s); the answer
    /// then holds what matched so far.
    pub timeout_ms: Option<u64>,
}

impl LogQuery {
    /// Everything, without waiting.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Only records of this trace.
    #[must_use]
    pub fn trace_id(mut self, trace_id: impl Into<String>) -> Self {
        self.trace_id = Some(trace_id.into());
        self
    }

    /// Only records of this service.
    #[must_use]
    pub fn service_name(mut self, service_name: impl Into<String>) -> Self {
        self.service_name = Some(service_name.into());
        self
    }

    /// Wait until at least `n` records match.
    #[must_use]
    pub fn min_records(mut self, n: usize) -> Self {
        self.min_records = Some(n);
        self
    }

    /// Give up waiting after `timeout`.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// The timeout the receiver applies to this query.
    #[must_use]
    pub fn effective_timeout(&self) -> Duration {
        self.timeout_ms
            .map_or(DEFAULT_TIMEOUT, Duration::from_millis)
            .min(MAX_TIMEOUT)
    }
}

/// A compiled [`LogQuery`] filter.
struct LogFilter {
    trace_id: Option<Vec<u8>>,
    service_name: Option<String>,
}

impl LogFilter {
    fn new(query: &LogQuery) -> Result<Self, String> {
        let trace_id = match &query.trace_id {
            None => None,
            Some(hex) => Some(decode_trace_id(hex).ok_or_else(|| {
                format!("trace_id {hex:?} is not a trace id (32 hex digits, not all zero)")
            })?),
        };
        Ok(Self {
            trace_id,
            service_name: query.service_name.clone(),
        })
    }

    fn select(&self, kept: &[std::sync::Arc<ResourceLogs>]) -> (LogsData, usize) {
        let mut matched = 0;
        let resource_logs = kept
            .iter()
            .filter(|rl| {
                self.service_name
                    .as_deref()
                    .is_none_or(|want| service_name(rl) == Some(want))
            })
            .filter_map(|rl| {
                let scope_logs: Vec<ScopeLogs> = rl
                    .scope_logs
                    .iter()
                    .filter_map(|sl| {
                        let records: Vec<_> = sl
                            .log_records
                            .iter()
                            .filter(|r| self.trace_id.as_ref().is_none_or(|t| &r.trace_id == t))
                            .cloned()
                            .collect();
                        matched += records.len();
                        (!records.is_empty()).then(|| ScopeLogs {
                            log_records: records,
                            ..sl.clone()
                        })
                    })
                    .collect();
                (!scope_logs.is_empty()).then(|| ResourceLogs {
                    scope_logs,
                    ..ResourceLogs::clone(rl)
                })
            })
            .collect();
        (LogsData { resource_logs }, matched)
    }
}

/// The `service.name` of a resource's logs.
fn service_name(rl: &ResourceLogs) -> Option<&str> {
    rl.resource
        .as_ref()?
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
}

/// What a logs query found: the records, and whether the wait condition held.
pub(crate) struct Found {
    pub(crate) data: LogsData,
    pub(crate) matched: usize,
    pub(crate) held: bool,
}

/// Answers `query`, waiting for `min_records` matches up to its timeout.
pub(crate) async fn wait(store: &Store, query: &LogQuery) -> Result<Found, String> {
    let filter = LogFilter::new(query)?;
    let deadline = tokio::time::Instant::now() + query.effective_timeout();
    let want = query.min_records.unwrap_or(0);
    let mut changed = store.subscribe();
    loop {
        changed.borrow_and_update();
        let (data, matched) = filter.select(&store.logs());
        if matched >= want {
            return Ok(Found {
                data,
                matched,
                held: true,
            });
        }
        match tokio::time::timeout_at(deadline, changed.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => {
                return Ok(Found {
                    data,
                    matched,
                    held: false,
                });
            }
        }
    }
}
