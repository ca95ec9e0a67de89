//! Logging and OpenTelemetry span export for every Metis binary.
//!
//! [`init_tracing`] is the one entry point: it reads the variables of [`SETTINGS`] (the book's
//! settings page is generated from that table) and installs a global subscriber that logs to stdout and turns spans into OpenTelemetry spans
//! whose resource carries `service.name`, `service.version` and `service.instance.id`. Span ids
//! exist even when nothing is exported, so the ids carried in messages and logs always join.
//! An unreachable or malformed endpoint never crashes or blocks the service: it warns once and
//! keeps logging locally. The returned [`TelemetryGuard`] flushes and shuts the exporter down
//! when dropped.
//!
//! **Export failures are reported, never swallowed.** Every failed export is counted; the first
//! of a run of failures logs [`EXPORT_FAILED`] (WARN, target `telemetry`, with the endpoint
//! and error), and shutting down logs [`EXPORT_FAILURES_AT_SHUTDOWN`] with the count when any
//! export failed, or [`FLUSH_FAILED`] (ERROR) when the last flush or the shutdown itself
//! failed. These messages are stable: the e2e harness fails a scenario whose services logged
//! them, unless the scenario declares an outage.
//!
//! [`propagation`] carries W3C trace context across NATS headers.

pub mod propagation;

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use tracing;

/// Default `RUST_LOG`.
pub const DEFAULT_FILTER: &str = "info";

/// The variables this crate (and the OpenTelemetry SDK under it) reads, for both services
/// (see `common::settings`).
pub const SETTINGS: &[common::settings::Setting] = &[
    common::settings::Setting {
        name: "RUST_LOG",
        meaning: "`tracing` filter directives; they gate log lines **and** exported spans alike (a span filtered out is neither logged nor exported); a bad value falls back to the default with a warning",
        default: || common::settings::literal(DEFAULT_FILTER),
    },
    common::settings::Setting {
        name: "LOG_FORMAT",
        meaning: "`json` (one object per line, fields flattened, with the current span) or `text`; a bad value falls back to the default with a warning",
        default: || common::settings::literal("text"),
    },
    common::settings::Setting {
        name: "OTEL_EXPORTER_OTLP_ENDPOINT",
        meaning: "OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`; unreachable or malformed: the service warns once and keeps working, failed exports are counted and reported again at shutdown",
        default: || "unset: no export".to_owned(),
    },
    common::settings::Setting {
        name: "OTEL_EXPORTER_OTLP_COMPRESSION",
        meaning: "`gzip` compresses every export (read by the OTLP exporter)",
        default: || "none".to_owned(),
    },
    common::settings::Setting {
        name: "OTEL_BSP_SCHEDULE_DELAY",
        meaning: "milliseconds between batch exports; `OTEL_BSP_MAX_QUEUE_SIZE` and `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` work too (read by the SDK's batch span processor; the export timeout is the exporter's, 5 s)",
        default: || "the SDK's (5000)".to_owned(),
    },
    common::settings::Setting {
        name: "OTEL_RESOURCE_ATTRIBUTES",
        meaning: "extra resource attributes, e.g. `deployment.environment=staging` (read by the SDK)",
        default: || "none".to_owned(),
    },
];

/// Directives always added to the filter: the exporter's own crates would otherwise log every
/// failed export; [`WarnOnce`] reports export health instead.
const QUIET: &str = "opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off,tonic=warn,h2=warn,hyper=warn,tower=warn";

/// The message logged (WARN, target `telemetry`) when an export fails after a success or at
/// the first try.
pub const EXPORT_FAILED: &str =
    "span export failed; spans are dropped until the collector answers (logged once)";
/// The message logged (WARN, target `telemetry`) at shutdown when any export failed, with
/// `failed_exports` (how many).
pub const EXPORT_FAILURES_AT_SHUTDOWN: &str = "span exports failed during this run";
/// The message logged (ERROR, target `telemetry`) when the final flush or the shutdown of
/// the exporter fails, with the `error`.
pub const FLUSH_FAILED: &str = "flushing spans at shutdown failed; spans may be lost";

/// Failed exports in this process (see the module docs).
static FAILED_EXPORTS: AtomicU64 = AtomicU64::new(0);

/// How many span exports have failed in this process so far.
#[must_use]
pub fn failed_exports() -> u64 {
    FAILED_EXPORTS.load(Ordering::Relaxed)
}

/// How long dropping the guard may spend flushing to a slow or dead collector.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (fields flattened, with the current span and span list).
    Json,
}

/// Everything [`init_tracing`] reads from the environment, for building without it.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `service.name`.
    pub service_name: String,
    /// `RUST_LOG`.
    pub filter: Option<String>,
    /// `LOG_FORMAT`.
    pub format: Option<String>,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_endpoint: Option<String>,
}

impl TelemetryConfig {
    /// Reads the variables named in the module docs.
    #[must_use]
    pub fn from_env(service_name: &str) -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Self {
            service_name: service_name.to_owned(),
            filter: var("RUST_LOG"),
            format: var("LOG_FORMAT"),
            otlp_endpoint: var("OTEL_EXPORTER_OTLP_ENDPOINT"),
        }
    }
}

/// Keeps the tracer provider alive; flushes and shuts it down on drop.
#[must_use = "dropping the guard shuts span export down"]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
    /// Whether spans go to a collector.
    pub exporting: bool,
}

impl TelemetryGuard {
    /// Exports every finished span now (bounded by the exporter's timeout); the error says
    /// why it could not.
    pub fn flush(&self) -> Result<(), String> {
        self.provider.force_flush().map_err(|e| e.to_string())
    }
}

impl Drop for TelemetryGuard {
    /// Flushes and shuts the exporter down, and reports what failed (see the module docs).
    fn drop(&mut self) {
        let flushed = self.provider.force_flush();
        let shut = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT);
        if !self.exporting {
            return;
        }
        if let Some(e) = flushed.err().or(shut.err()) {
            tracing::error!(target: "telemetry", error = %e, "{FLUSH_FAILED}");
        }
        let failed = failed_exports();
        if failed > 0 {
            tracing::warn!(target: "telemetry", failed_exports = failed, "{EXPORT_FAILURES_AT_SHUTDOWN}");
        }
    }
}

/// Sets up logging and span export for `service_name` from the environment and installs it as
/// the global subscriber. Call once, early, inside the Tokio runtime.
pub fn init_tracing(service_name: &str) -> TelemetryGuard {
    let (subscriber, guard, warnings) = build(TelemetryConfig::from_env(service_name));
    if subscriber.try_init().is_err() {
        eprintln!("warning: a global tracing subscriber was already set; keeping it");
    }
    for w in warnings {
        tracing::warn!("{w}");
    }
    guard
}

/// The subscriber [`init_tracing`] would install, plus the guard and any configuration
/// warnings (reported once the subscriber is in place).
pub fn build(
    config: TelemetryConfig,
) -> (
    impl tracing::Subscriber + Send + Sync + 'static,
    TelemetryGuard,
    Vec<String>,
) {
    let mut warnings = Vec::new();
    let directives = config
        .filter
        .clone()
        .unwrap_or_else(|| DEFAULT_FILTER.to_owned());
    let filter = match EnvFilter::builder().parse(format!("{directives},{QUIET}")) {
        Ok(f) => f,
        Err(e) => {
            warnings.push(format!(
                "invalid RUST_LOG '{directives}' ({e}); using 'info'"
            ));
            EnvFilter::new(format!("info,{QUIET}"))
        }
    };
    let format = match config
        .format
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            warnings.push(format!(
                "unknown LOG_FORMAT '{other}' (expected json or text); using text"
            ));
            LogFormat::Text
        }
    };

    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", uuid::Uuid::new_v4().to_string()),
        ])
        .build();
    let mut provider = SdkTracerProvider::builder().with_resource(resource);
    let mut exporting = false;
    if let Some(endpoint) = &config.otlp_endpoint {
        match exporter(endpoint) {
            Ok(exp) => {
                provider = provider.with_batch_exporter(exp);
                exporting = true;
            }
            Err(e) => warnings.push(format!(
                "OTEL_EXPORTER_OTLP_ENDPOINT '{endpoint}' is not usable ({e}); spans are not exported"
            )),
        }
    }
    let provider = provider.build();
    let tracer = provider.tracer(config.service_name.clone());

    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false);
    let (text, json) = match format {
        LogFormat::Text => (
            Some(tracing_subscriber::fmt::layer().with_ansi(std::io::stdout().is_terminal())),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            ),
        ),
    };
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(text)
        .with(json);
    (
        subscriber,
        TelemetryGuard {
            provider,
            exporting,
        },
        warnings,
    )
}

fn exporter(endpoint: &str) -> Result<WarnOnce<opentelemetry_otlp::SpanExporter>, String> {
    let uri: http_uri::Uri = endpoint.parse().map_err(|e| format!("not a URI: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err("expected http://host:port or https://host:port".to_owned());
    }
    let inner = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    Ok(WarnOnce {
        inner,
        endpoint: endpoint.to_owned(),
        failing: Arc::new(AtomicBool::new(false)),
    })
}

mod http_uri {
    //! `http::Uri` without a direct dependency on `http`.
    pub use tonic::codegen::http::Uri;
}

/// Wraps an exporter so a failing collector produces one warning (and one notice when it
/// recovers) instead of one per batch.
#[derive(Debug)]
struct WarnOnce<E> {
    inner: E,
    endpoint: String,
    failing: Arc<AtomicBool>,
}

impl<E: SpanExporter> SpanExporter for WarnOnce<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        if result.is_err() {
            FAILED_EXPORTS.fetch_add(1, Ordering::Relaxed);
        }
        match &result {
            Err(e) if !self.failing.swap(true, Ordering::SeqCst) => {
                tracing::warn!(
                    target: "telemetry",
                    endpoint = %self.endpoint,
                    error = %e,
                    "{EXPORT_FAILED}"
                );
            }
            Ok(()) if self.failing.swap(false, Ordering::SeqCst) => {
                tracing::info!(target: "telemetry", endpoint = %self.endpoint, "span export recovered");
            }
            _ => {}
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    fn config(endpoint: Option<&str>) -> TelemetryConfig {
        TelemetryConfig {
            service_name: "test-service".into(),
            filter: Some("info".into()),
            format: Some("json".into()),
            otlp_endpoint: endpoint.map(str::to_owned),
        }
    }

    /// Drops `guard` on another thread and waits for it with a deadline.
    fn drop_within(guard: TelemetryGuard, deadline: Duration) {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            drop(guard);
            let _ = tx.send(());
        });
        rx.recv_timeout(deadline)
            .expect("dropping the guard did not return within the deadline");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn malformed_endpoint_warns_and_disables_export() {
        for bad in ["not a url", "ftp://host:21", "http://"] {
            let (_sub, guard, warnings) = build(config(Some(bad)));
            assert!(!guard.exporting, "{bad} should not export");
            assert!(
                warnings
                    .iter()
                    .any(|w| w.contains("OTEL_EXPORTER_OTLP_ENDPOINT") && w.contains(bad)),
                "{bad}: {warnings:?}"
            );
            drop_within(guard, Duration::from_secs(10));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_collector_neither_blocks_spans_nor_shutdown() {
        // Bind and drop a listener to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (sub, guard, warnings) = build(config(Some(&format!("http://127.0.0.1:{port}"))));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(guard.exporting);
        tracing::subscriber::with_default(sub, || {
            for i in 0..1000 {
                let span = tracing::info_span!("work", i);
                let _e = span.enter();
                tracing::info!("inside");
            }
        });
        // The failed exports are counted (and logged under the stable messages), whatever
        // the flush itself reports.
        let flushed = guard.flush();
        assert!(
            failed_exports() > 0,
            "exports to a dead collector count as failed (flush: {flushed:?})"
        );
        drop_within(guard, Duration::from_secs(20));
    }

    #[test]
    fn bad_filter_and_format_fall_back_with_warnings() {
        let mut c = config(None);
        c.filter = Some("=[".into());
        c.format = Some("yaml".into());
        let (_s, guard, warnings) = build(c);
        assert!(
            warnings.iter().any(|w| w.contains("RUST_LOG")),
            "{warnings:?}"
        );
        assert!(
            warnings.iter().any(|w| w.contains("LOG_FORMAT")),
            "{warnings:?}"
        );
        assert!(!guard.exporting);
    }
}
