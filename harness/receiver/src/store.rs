//! What the receiver keeps: every accepted trace export and every log export, whole and in
//! arrival order, plus counters for metrics (which are accepted but not kept).
//!
//! Ingest is cheap on purpose: a decoded request's `resource_spans` move into one shared
//! [`Batch`] under a short lock, and nothing is converted until somebody queries. Every ingest
//! (and every clear) bumps a `watch` channel so waiters wake without polling.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

/// One accepted trace export, exactly as decoded.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) resource_spans: Vec<ResourceSpans>,
}

/// Counters the receiver reports on `GET /v1/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Spans kept (since start or the last clear).
    pub spans: u64,
    /// `ResourceSpans` kept (since start or the last clear).
    pub resource_spans: u64,
    /// Trace export requests accepted since start (gRPC and HTTP).
    pub trace_exports: u64,
    /// Log export requests accepted since start.
    pub log_exports: u64,
    /// Log records received since start.
    pub log_records: u64,
    /// Log records kept (since start or the last clear of the logs).
    #[serde(default)]
    pub kept_log_records: u64,
    /// Spans refused for invalid ids since start (answered with `partial_success`).
    #[serde(default)]
    pub rejected_spans: u64,
    /// Exports (any signal, either port) that arrived gzip-compressed since start.
    #[serde(default)]
    pub compressed_exports: u64,
    /// Metric export requests accepted since start.
    pub metric_exports: u64,
    /// Metrics received since start (counted, not kept).
    pub metrics: u64,
    /// Milliseconds since the last trace export arrived; `None` if none has.
    pub last_ingest_age_ms: Option<u64>,
}

#[derive(Debug, Default)]
struct Traces {
    /// Bumped by every clear, so a waiter knows its view of `batches` is stale.
    generation: u64,
    batches: Vec<Arc<Batch>>,
    spans: u64,
    resource_spans: u64,
    exports: u64,
    last_ingest: Option<Instant>,
}

/// The batches a waiter has not seen yet.
#[derive(Debug)]
pub(crate) struct View {
    /// The store's generation; when it differs from the one asked for, `batches` starts
    /// from the beginning.
    pub(crate) generation: u64,
    pub(crate) batches: Vec<Arc<Batch>>,
    /// When the last trace export arrived, or when the store was created if none has.
    pub(crate) last_activity: Instant,
}

/// The receiver's shared state.
#[derive(Debug)]
pub(crate) struct Store {
    traces: Mutex<Traces>,
    logs: Mutex<Vec<Arc<ResourceLogs>>>,
    changed: watch::Sender<u64>,
    rejected_spans: AtomicU64,
    compressed_exports: AtomicU64,
    created: Instant,
    log_exports: AtomicU64,
    log_records: AtomicU64,
    metric_exports: AtomicU64,
    metrics: AtomicU64,
    /// The fault mode (`/v1/faults`).
    pub(crate) faults: crate::fault::Faults,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            traces: Mutex::default(),
            logs: Mutex::default(),
            changed: watch::Sender::new(0),
            rejected_spans: AtomicU64::new(0),
            compressed_exports: AtomicU64::new(0),
            created: Instant::now(),
            log_exports: AtomicU64::new(0),
            log_records: AtomicU64::new(0),
            metric_exports: AtomicU64::new(0),
            metrics: AtomicU64::new(0),
            faults: crate::fault::Faults::default(),
        }
    }
}

/// Number of log records in `resource_logs`.
pub(crate) fn log_record_count(resource_logs: &[ResourceLogs]) -> usize {
    resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum()
}

/// Number of spans in `resource_spans`.
pub(crate) fn span_count(resource_spans: &[ResourceSpans]) -> usize {
    resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

impl Store {
    fn traces(&self) -> MutexGuard<'_, Traces> {
        self.traces.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps one trace export and wakes every waiter. Returns its span count.
    pub(crate) fn ingest_traces(&self, resource_spans: Vec<ResourceSpans>) -> usize {
        let spans = span_count(&resource_spans);
        {
            let mut traces = self.traces();
            traces.exports += 1;
            traces.last_ingest = Some(Instant::now());
            if !resource_spans.is_empty() {
                traces.spans += spans as u64;
                traces.resource_spans += resource_spans.len() as u64;
                traces.batches.push(Arc::new(Batch { resource_spans }));
            }
        }
        self.changed.send_modify(|n| *n += 1);
        spans
    }

    /// Counts an export that arrived gzip-compressed.
    pub(crate) fn count_compressed(&self) {
        self.compressed_exports.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts spans refused for invalid ids.
    pub(crate) fn count_rejected(&self, spans: i64) {
        self.rejected_spans
            .fetch_add(u64::try_from(spans).unwrap_or(0), Ordering::Relaxed);
    }

    /// Keeps one log export and wakes every waiter.
    pub(crate) fn ingest_logs(&self, resource_logs: Vec<ResourceLogs>) {
        let records = log_record_count(&resource_logs);
        self.log_exports.fetch_add(1, Ordering::Relaxed);
        self.log_records
            .fetch_add(records as u64, Ordering::Relaxed);
        {
            let mut logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
            logs.extend(resource_logs.into_iter().map(Arc::new));
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Every kept `ResourceLogs`, in arrival order.
    pub(crate) fn logs(&self) -> Vec<Arc<ResourceLogs>> {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets every kept log record and wakes every waiter.
    pub(crate) fn clear_logs(&self) {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.changed.send_modify(|n| *n += 1);
    }

    /// Counts one metric export of `metrics` metrics.
    pub(crate) fn ingest_metrics(&self, metrics: usize) {
        self.metric_exports.fetch_add(1, Ordering::Relaxed);
        self.metrics.fetch_add(metrics as u64, Ordering::Relaxed);
    }

    /// Forgets every kept span (export counters stay) and wakes every waiter.
    pub(crate) fn clear(&self) {
        {
            let mut traces = self.traces();
            traces.generation += 1;
            traces.batches = Vec::new();
            traces.spans = 0;
            traces.resource_spans = 0;
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// A receiver that changes on every ingest and clear.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The batches from index `from` on, if `generation` is still current; otherwise all of
    /// them. `view(None, 0)` is everything.
    pub(crate) fn view(&self, generation: Option<u64>, from: usize) -> View {
        let traces = self.traces();
        let from = if generation == Some(traces.generation) {
            from.min(traces.batches.len())
        } else {
            0
        };
        View {
            generation: traces.generation,
            batches: traces.batches[from..].to_vec(),
            last_activity: traces.last_ingest.unwrap_or(self.created),
        }
    }

    /// The current counters.
    pub(crate) fn stats(&self) -> Stats {
        let traces = self.traces();
        Stats {
            spans: traces.spans,
            resource_spans: traces.resource_spans,
            trace_exports: traces.exports,
            log_exports: self.log_exports.load(Ordering::Relaxed),
            log_records: self.log_records.load(Ordering::Relaxed),
            kept_log_records: self
                .logs()
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len() as u64)
                .sum(),
            rejected_spans: self.rejected_spans.load(Ordering::Relaxed),
            compressed_exports: self.compressed_exports.load(Ordering::Relaxed),
            metric_exports: self.metric_exports.load(Ordering::Relaxed),
            metrics: self.metrics.load(Ordering::Relaxed),
            last_ingest_age_ms: traces
                .last_ingest
                .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)),
        }
    }
}
