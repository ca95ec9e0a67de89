//! One scenario's whole system: infrastructure ([`crate::infra`]), the API and engine
//! processes, an API client and a receiver client, and the artefact folder
//! `target/e2e/<scenario>/` (process logs, `timeline.txt`, and on collection `spans.json` and
//! `tree.txt`).
//!
//! The API and engines are host processes built from this workspace, started with a clean
//! environment (nothing from the caller's `RUST_LOG`, `OTEL_*`, `NATS_*` leaks in), port 0,
//! `LOG_FORMAT=json`, `OTEL_BSP_SCHEDULE_DELAY` short, and the receiver as their collector
//! (`OTEL_EXPORTER_OTLP_COMPRESSION=gzip`).
//! [`Stack::run`] wraps a scenario body so a failure (error or panic) leaves the artefacts and
//! a message naming the folder.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::FutureExt;
use futures::future::BoxFuture;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use test_support::metis::{ApiClient, Service, start_api, start_engine};

use crate::backend::{self, Backend};
use crate::infra::Infra;
use crate::otlp::{Query, ReceiverClient};
use crate::progress::Timeline;

/// The engine config scenarios use unless told otherwise.
pub const DEFAULT_ENGINE_CONFIG: &str = "fixtures/engines/generic.yaml";

/// What a scenario needs.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Engine instances to start (0: runs stay QUEUED).
    pub engines: usize,
    /// The engine.yaml to use (relative to the workspace root); its workdir base is replaced
    /// by a folder inside the scenario's artefact folder.
    pub engine_config: PathBuf,
    /// Overrides `E2E_BACKEND` (used by the bench).
    pub backend: Option<Backend>,
    /// Run the services with their production fault timings instead of the short ones
    /// (used by the bench to measure both).
    pub production_timings: bool,
    /// Overrides `E2E_NATS` (one server or a cluster).
    pub nats: Option<crate::topology::Topology>,
    /// Start the engines with `METIS_UNSAFE_NO_SANDBOX=1` (only the bench, to measure what
    /// the sandbox costs; no scenario runs workflows unsandboxed).
    pub unsandboxed: bool,
    /// More settings for `metis-api` (a scenario's own limits, e.g.
    /// `MAX_UNFINISHED_RUNS_PER_USER`).
    pub api_env: Vec<(&'static str, String)>,
    /// Overrides the engine.yaml's `engine.maxConcurrentRuns` (a scenario that needs runs to
    /// wait for a slot, e.g. `fairness`).
    pub max_concurrent_runs: Option<usize>,
    /// More settings for every engine (the chaos tests' injected bug, `METIS_TEST_BUG`).
    pub engine_env: Vec<(&'static str, String)>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            engines: 1,
            engine_config: PathBuf::from(DEFAULT_ENGINE_CONFIG),
            backend: None,
            production_timings: false,
            nats: None,
            unsandboxed: false,
            api_env: Vec::new(),
            max_concurrent_runs: None,
            engine_env: Vec::new(),
        }
    }
}

/// A running system for one scenario.
pub struct Stack {
    /// Scenario name (also the artefact folder name).
    pub scenario: String,
    /// `target/e2e/<scenario>/`.
    pub dir: PathBuf,
    /// The harness's own timeline.
    pub timeline: Timeline,
    /// NATS and the receiver.
    pub infra: Infra,
    /// The API process.
    pub api: Option<Service>,
    /// More API instances ([`Stack::start_api_replica`]), behind other ports.
    pub api_replicas: Vec<Service>,
    /// Engine processes, in start order.
    pub engines: Vec<Service>,
    /// A client as user `alice`.
    pub client: ApiClient,
    /// The receiver's query client.
    pub receiver: ReceiverClient,
    /// The engine.yaml the engines run with.
    pub engine_config: PathBuf,
    /// Whether `E2E_KEEP=1` asked to leave everything up.
    pub keep: bool,
    /// Whether the services run with their production fault timings.
    pub production_timings: bool,
    /// Whether the scenario causes a collector outage, so span export failures the services
    /// report are expected ([`Stack::expect_export_outage`]).
    pub export_outage_expected: bool,
    /// What the harness did to the system ([`crate::fault`]'s verbs), exported as spans of
    /// its own when the spans are collected ([`crate::fault_trace`]).
    pub faults: crate::fault_trace::FaultLog,
    started_engines: usize,
    unsandboxed: bool,
    extra_api_env: Vec<(&'static str, String)>,
    extra_engine_env: Vec<(&'static str, String)>,
}

/// Metis's span registry (see `spantree::registry`).
#[must_use]
pub fn registry_path() -> std::path::PathBuf {
    test_support::workspace_root().join("crates/telemetry/spans.toml")
}

/// Timings of the fault paths, short so a fault scenario takes seconds (the binaries'
/// production defaults: heartbeat 2 s, TTL 10 s, reaper 2 s).
pub const HEARTBEAT_INTERVAL_MS: u64 = 200;
/// See [`HEARTBEAT_INTERVAL_MS`].
pub const ENGINE_TTL_MS: u64 = 1200;
/// See [`HEARTBEAT_INTERVAL_MS`].
pub const REAPER_INTERVAL_MS: u64 = 200;

/// Environment for the Metis processes: export to the receiver gzip-compressed (as
/// production collectors are commonly fed; the receiver must take it), flush fast, short fault
/// timings.
pub(crate) fn service_env(infra: &Infra, production: bool) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", infra.receiver.grpc.clone()),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".to_owned()),
        // Always short, also with the production fault timings: a server that goes silent
        // (frozen, cut off) is left after two missed pings, 0.6 s instead of 10 s, which
        // would eat half of a request's 20 s failover bound.
        ("NATS_PING_INTERVAL_MS", "300".to_owned()),
    ];
    if !production {
        env.extend([
            ("REAPER_INTERVAL_MS", REAPER_INTERVAL_MS.to_string()),
            ("ENGINE_TTL_MS", ENGINE_TTL_MS.to_string()),
            ("HEARTBEAT_INTERVAL_MS", HEARTBEAT_INTERVAL_MS.to_string()),
        ]);
    }
    env
}

impl Stack {
    /// Brings up the whole system for `scenario` on the backend `E2E_BACKEND` selects.
    pub async fn start(scenario: &str, options: StackOptions) -> Result<Self> {
        let dir = test_support::target_dir().join("e2e").join(scenario);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let timeline = Timeline::new(scenario, Some(&dir.join("timeline.txt")));
        let (backend, why) = match options.backend {
            Some(b) => (b, "chosen by the caller".to_owned()),
            None => backend::from_env()?,
        };
        timeline.note(format!("backend {backend}: {why}"));
        let keep = std::env::var_os("E2E_KEEP").is_some_and(|v| v == "1");
        if keep {
            timeline.note("E2E_KEEP=1: containers and processes are left running");
        }
        let step = timeline.step("building the service binaries (cargo; fast when unchanged)");
        test_support::bin("metis-api")?;
        step.done();

        let topology = match options.nats {
            Some(t) => t,
            None => crate::topology::from_env()?,
        };
        timeline.note(format!("NATS topology: {topology}"));
        let infra = Infra::start(backend, topology, scenario, &dir, &timeline).await?;
        let engine_config =
            write_engine_config(&options.engine_config, &dir, options.max_concurrent_runs)?;
        let receiver = ReceiverClient::new(&infra.receiver.http);
        let step = timeline.step("starting metis-api");
        let mut api_env = service_env(&infra, options.production_timings);
        api_env.extend(options.api_env.iter().cloned());
        let api = start_api(&infra.nats_endpoint, &dir, &api_env).await?;
        step.done();
        // The API created the streams and buckets; on a cluster their leaders are elected after
        // that. A scenario starts once every one is led and every replica current, so its first
        // runs do not meet a start-up election (retry events in a tree that pins none).
        let step = timeline.step("waiting until every stream and bucket has a leader");
        infra.wait_streams_led().await?;
        step.done();
        let client = ApiClient::new(&api.url);
        let mut stack = Self {
            scenario: scenario.to_owned(),
            dir,
            timeline,
            infra,
            api: Some(api),
            api_replicas: Vec::new(),
            engines: Vec::new(),
            client,
            receiver,
            engine_config,
            keep,
            production_timings: options.production_timings,
            started_engines: 0,
            unsandboxed: options.unsandboxed,
            extra_api_env: options.api_env.clone(),
            extra_engine_env: options.engine_env.clone(),
            export_outage_expected: false,
            faults: crate::fault_trace::FaultLog::default(),
        };
        for _ in 0..options.engines {
            stack.start_engine().await?;
        }
        stack
            .timeline
            .note(format!("stack up: {}", stack.infra.describe()));
        Ok(stack)
    }

    /// The environment every `metis-api` of this stack starts with.
    pub(crate) fn api_env(&self) -> Vec<(&'static str, String)> {
        let mut env = service_env(&self.infra, self.production_timings);
        env.extend(self.extra_api_env.iter().cloned());
        env
    }

    /// A path that sandboxed workflows can see (in the scenario's read-only shared folder): a
    /// scenario creates it to open the gate `gated.sh --gate <path>` waits for.
    #[must_use]
    pub fn gate(&self) -> PathBuf {
        self.dir.join(SHARED_DIR).join("gate")
    }

    /// Starts one more `metis-api` on the same NATS (another replica, on its own port) and
    /// returns a client for it (user `alice`, as [`Stack::client`]).
    pub async fn start_api_replica(&mut self) -> Result<ApiClient> {
        let n = self.api_replicas.len() + 2;
        let step = self
            .timeline
            .step(format!("starting metis-api replica #{n}"));
        let api = start_api(
            &self.infra.nats_endpoint,
            &self.dir.join(format!("api-{n}")),
            &self.api_env(),
        )
        .await?;
        step.done();
        let client = ApiClient::new(&api.url);
        self.api_replicas.push(api);
        Ok(client)
    }

    /// Starts one more engine instance.
    pub async fn start_engine(&mut self) -> Result<()> {
        self.started_engines += 1;
        let name = format!("engine-{}", self.started_engines);
        let step = self
            .timeline
            .step(format!("starting metis-engine-generic ({name})"));
        let mut env = service_env(&self.infra, self.production_timings);
        if self.unsandboxed {
            env.push(("METIS_UNSAFE_NO_SANDBOX", "1".to_owned()));
        }
        env.extend(self.extra_engine_env.iter().cloned());
        let e = start_engine(
            &name,
            &self.engine_config,
            &self.infra.nats_endpoint,
            &self.dir,
            &env,
        )
        .await?;
        step.done();
        self.engines.push(e);
        Ok(())
    }

    /// SIGTERM to engine `index` (0-based, in start order); waits for a clean exit. A clean
    /// stop is setup, not a fault: it records no action (see [`crate::fault_trace`]).
    pub async fn stop_engine(&mut self, index: usize) -> Result<()> {
        let step = self
            .timeline
            .step(format!("stopping engine #{} (SIGTERM)", index + 1));
        let e = self
            .engines
            .get_mut(index)
            .with_context(|| format!("no engine #{}", index + 1))?;
        let status = e.proc.terminate(Duration::from_secs(30)).await?;
        anyhow::ensure!(
            status.success(),
            "engine #{} exited with {status} on SIGTERM",
            index + 1
        );
        step.done();
        Ok(())
    }

    /// Stops the receiver (a collector outage).
    pub async fn stop_receiver(&mut self) -> Result<()> {
        let step = self.timeline.step("stopping the OTLP receiver");
        self.infra.stop_receiver().await?;
        step.done();
        self.faults.begin(crate::fault_trace::Action::new(
            "collector down",
            "otlp-receiver",
        ));
        Ok(())
    }

    /// Starts the receiver again on the same addresses.
    pub async fn restart_receiver(&mut self) -> Result<()> {
        let step = self.timeline.step("restarting the OTLP receiver");
        let dir = self.dir.clone();
        let scenario = self.scenario.clone();
        self.infra.restart_receiver(&scenario, &dir).await?;
        step.done();
        self.faults.end("collector down", "otlp-receiver");
        Ok(())
    }

    /// Stops the API and every engine with SIGTERM (they flush their spans), then waits until
    /// the receiver holds at least `min_spans` spans and has been quiet for a short window.
    /// Writes `spans.json` into the artefact folder.
    pub async fn collect_spans(&mut self, min_spans: usize) -> Result<TracesData> {
        if self.keep {
            // E2E_KEEP=1: leave the services up; their batches go out every 50 ms.
            let data = self.wait_for_spans(min_spans).await?;
            return self.export_faults(data).await;
        }
        let step = self
            .timeline
            .step("stopping metis-api and engines with SIGTERM (flushes spans)");
        for api in self.api.iter_mut().chain(self.api_replicas.iter_mut()) {
            let status = api.proc.terminate(Duration::from_secs(30)).await?;
            anyhow::ensure!(
                status.success(),
                "metis-api exited with {status} on SIGTERM"
            );
        }
        for (i, e) in self.engines.iter_mut().enumerate() {
            if e.proc.has_exited() {
                continue;
            }
            let status = e.proc.terminate(Duration::from_secs(30)).await?;
            anyhow::ensure!(
                status.success(),
                "engine #{} exited with {status} on SIGTERM",
                i + 1
            );
        }
        step.done();
        self.check_exports().await?;
        let data = self.wait_for_spans(min_spans).await?;
        self.export_faults(data).await
    }

    /// Exports the harness's own actions as spans ([`crate::fault_trace`]), placed by what
    /// `data` holds, and waits until the receiver holds them too.
    async fn export_faults(&mut self, data: TracesData) -> Result<TracesData> {
        if self.faults.actions().is_empty() {
            return Ok(data);
        }
        let step = self
            .timeline
            .step("exporting the harness's actions as spans of e2e-harness");
        let count = crate::fault_trace::export(
            &self.faults,
            &self.infra.receiver.grpc,
            &self.scenario,
            &data,
        )
        .await?;
        step.done();
        self.wait_for_spans(crate::otlp::span_count(&data) + count)
            .await
    }

    /// How many traces of its own the harness added to the collected spans: 1 when some
    /// action hit no run it could place (see [`crate::fault_trace`]), else 0.
    #[must_use]
    pub fn fault_traces(&self) -> usize {
        self.faults.own_traces()
    }

    /// Declares that this scenario takes the collector away (or makes it refuse more than the
    /// exporter retries): the span export failures the services report are part of the story,
    /// not a failure of the scenario.
    pub fn expect_export_outage(&mut self) {
        self.export_outage_expected = true;
    }

    /// The API, its replicas and the engines.
    fn services(&self) -> impl Iterator<Item = &Service> {
        self.api
            .iter()
            .chain(&self.api_replicas)
            .chain(&self.engines)
    }

    /// What the services logged about failed span exports (the telemetry crate's stable
    /// messages), as `service: message (error)`.
    #[must_use]
    pub fn export_failures(&self) -> Vec<String> {
        const STABLE: [&str; 3] = [
            telemetry::EXPORT_FAILED,
            telemetry::EXPORT_FAILURES_AT_SHUTDOWN,
            telemetry::FLUSH_FAILED,
        ];
        let mut found = Vec::new();
        for service in self.services() {
            for line in service.proc.lines() {
                let Some(json) = line.find('{').map(|i| &line[i..]) else {
                    continue;
                };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
                    continue;
                };
                let message = v["message"].as_str().unwrap_or_default();
                if v["target"] == "telemetry" && STABLE.contains(&message) {
                    let mut what = format!("{}: {message}", service.proc.name);
                    for key in ["error", "failed_exports"] {
                        if !v[key].is_null() {
                            what.push_str(&format!(" ({key}: {})", v[key]));
                        }
                    }
                    found.push(what);
                }
            }
        }
        found
    }

    /// Fails when a service reported span export failures and the scenario did not declare an
    /// outage: a tree built from what did arrive would only show up as a confusing diff.
    async fn check_exports(&self) -> Result<()> {
        // The shutdown report is the last thing a service writes: read its output to the end.
        for service in self.services() {
            service.proc.output_closed(Duration::from_secs(2)).await;
        }
        let failures = self.export_failures();
        if failures.is_empty() || self.export_outage_expected {
            return Ok(());
        }
        Err(anyhow!(
            "the services reported span export failures, so the receiver may lack spans (a \
             scenario that causes an outage says so with Stack::expect_export_outage):{}",
            failures
                .iter()
                .map(|f| format!("\n  - {f}"))
                .collect::<String>()
        ))
    }

    /// Waits until the receiver holds at least `min_spans` spans and was quiet for 200 ms.
    async fn wait_for_spans(&mut self, min_spans: usize) -> Result<TracesData> {
        let step = self.timeline.step(format!(
            "waiting for ≥{min_spans} spans and 200 ms of quiet at the receiver"
        ));
        let result = self
            .receiver
            .wait(
                &Query::new()
                    .min_spans(min_spans)
                    .quiet(Duration::from_millis(200))
                    .timeout(Duration::from_secs(20)),
            )
            .await
            .context("querying the OTLP receiver")?;
        let count = crate::otlp::span_count(&result.data);
        self.write_spans(&result.data)?;
        if result.timed_out {
            return Err(anyhow!(
                "timed out after 20s waiting for ≥{min_spans} spans with 200 ms of quiet; saw {count}: {}",
                span_names(&result.data).join(", ")
            ));
        }
        step.done();
        self.timeline.note(format!("collected {count} spans"));
        Ok(result.data)
    }

    /// On a tree error: `tree.txt` with what can be drawn anyway — orphans under
    /// `[missing parent]`, no trace-count check, none of the scenario's own redactions —
    /// headed by the error, so the artefacts show the partial trees and not nothing.
    fn write_best_effort_tree(&self, data: &TracesData, error: &crate::tree::TreeError) {
        let options = crate::tree_options()
            .draw_orphans()
            .redact(self.dir.display().to_string(), "[e2e-dir]");
        let text = match crate::tree::SpanForest::from_otlp(data, &options) {
            Ok(forest) => format!(
                "# best effort: the span tree is not valid, see the error below; orphans are drawn \
                 under [missing parent], without the scenario's redactions or trace count\n# {}\n\n{}",
                error.to_string().replace('\n', "\n# "),
                forest.render()
            ),
            Err(e) => format!(
                "# no span tree could be drawn\n# {}\n# (drawing orphans too: {})\n",
                error.to_string().replace('\n', "\n# "),
                e.to_string().replace('\n', "\n# ")
            ),
        };
        if let Err(e) = std::fs::write(self.dir.join("tree.txt"), text) {
            self.timeline
                .note(format!("writing the best-effort tree.txt failed: {e}"));
        }
    }

    /// Lints every collected span (`spantree::lint`, on the raw data: types count) against
    /// the span registry `crates/telemetry/spans.toml` and the OpenTelemetry semantic
    /// conventions; fails with every finding. [`Stack::build_when_complete`] calls it on the
    /// data its tree was built from, so every snapshotted scenario is linted.
    pub fn lint_spans(&self, data: &TracesData) -> Result<()> {
        static REGISTRY: std::sync::LazyLock<Result<crate::tree::registry::Registry, String>> =
            std::sync::LazyLock::new(|| {
                crate::tree::registry::Registry::load(&registry_path()).map_err(|e| e.to_string())
            });
        let registry = REGISTRY.as_ref().map_err(|e| anyhow!("{e}"))?;
        let findings = crate::tree::lint::lint(data, Some(registry));
        if findings.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = findings.iter().map(|f| format!("  - {f}")).collect();
        bail!(
            "{} lint finding(s): the spans do not fit the span registry ({}) and the semantic conventions:\n{}\n\
             Declare a new span or attribute in the registry (type, requirement, meaning), or fix the instrumentation.",
            findings.len(),
            registry_path().display(),
            list.join("\n")
        )
    }

    /// Builds a tree (or census) from `data` with `build`. While that fails because the data is
    /// incomplete (open or orphan spans, too few traces), waits for more spans, for at most
    /// 10 s in all; then fails with the last error, which says what is missing. Returns the
    /// result and the data it was built from (also written to `spans.json`).
    pub async fn build_when_complete<T>(
        &mut self,
        mut data: TracesData,
        build: impl Fn(&TracesData) -> Result<T, crate::tree::TreeError>,
    ) -> Result<(T, TracesData)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let error = match build(&data) {
                Ok(t) => {
                    self.lint_spans(&data)?;
                    return Ok((t, data));
                }
                Err(e) if e.is_incomplete() => e,
                Err(e) => {
                    self.write_best_effort_tree(&data, &e);
                    return Err(e.into());
                }
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let count = crate::otlp::span_count(&data);
            let more = if left.is_zero() {
                None
            } else {
                self.timeline.note(format!(
                    "the tree is incomplete with {count} spans; waiting for more ({error})"
                ));
                let result = self
                    .receiver
                    .wait(
                        &Query::new()
                            .min_spans(count + 1)
                            .quiet(Duration::from_millis(200))
                            .timeout(left),
                    )
                    .await
                    .context("querying the OTLP receiver")?;
                (!result.timed_out || crate::otlp::span_count(&result.data) > count)
                    .then_some(result.data)
            };
            match more {
                Some(newer) => {
                    self.write_spans(&newer)?;
                    data = newer;
                }
                None => {
                    self.write_best_effort_tree(&data, &error);
                    return Err(anyhow::Error::new(error).context(format!(
                        "the span tree stayed incomplete: no more spans arrived within 10 s \
                         after the services stopped ({count} spans)"
                    )));
                }
            }
        }
    }

    /// Everything the receiver holds now, without stopping anything.
    pub async fn spans_now(&self) -> Result<TracesData> {
        Ok(self.receiver.traces(&Query::new()).await?)
    }

    fn write_spans(&self, data: &TracesData) -> Result<()> {
        let path = self.dir.join("spans.json");
        std::fs::write(&path, serde_json::to_vec_pretty(data)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Writes the rendered tree into the artefact folder.
    pub fn write_tree(&self, rendered: &str) -> Result<()> {
        std::fs::write(self.dir.join("tree.txt"), rendered).context("writing tree.txt")
    }

    /// Runs a scenario body. On an error or a panic: writes what the receiver holds to
    /// `spans.json`, and fails with a message naming the artefact folder and the cause.
    pub async fn run<F>(mut self, body: F) -> Result<()>
    where
        F: for<'a> FnOnce(&'a mut Stack) -> BoxFuture<'a, Result<()>>,
    {
        let outcome = AssertUnwindSafe(body(&mut self)).catch_unwind().await;
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(panic) => Some(
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panic".to_owned()),
            ),
        };
        if self.keep {
            self.print_keep_instructions();
        }
        match failure {
            None => {
                self.timeline.note("scenario passed");
                Ok(())
            }
            Some(cause) => {
                self.timeline.note(format!("scenario FAILED: {cause}"));
                if !self.dir.join("spans.json").exists()
                    && let Ok(data) = self.spans_now().await
                {
                    let _ = self.write_spans(&data);
                }
                Err(anyhow!(
                    "scenario {} failed: {cause}\n  artefacts (process logs, spans.json, timeline.txt): {}",
                    self.scenario,
                    self.dir.display()
                ))
            }
        }
    }

    fn print_keep_instructions(&mut self) {
        let api = self
            .api
            .as_ref()
            .map_or("(stopped)".to_owned(), |a| a.url.clone());
        self.timeline.note(format!(
            "E2E_KEEP=1: API {api}, NATS {}, receiver query {}/v1/traces, logs in {}",
            self.infra.nats_url,
            self.infra.receiver.http,
            self.dir.display()
        ));
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.keep {
            self.infra.keep_running();
            if let Some(api) = self.api.take() {
                std::mem::forget(api);
            }
            for api in self.api_replicas.drain(..) {
                std::mem::forget(api);
            }
            for e in self.engines.drain(..) {
                std::mem::forget(e);
            }
        }
    }
}

fn span_names(data: &TracesData) -> Vec<String> {
    data.resource_spans
        .iter()
        .flat_map(|r| r.scope_spans.iter())
        .flat_map(|s| s.spans.iter())
        .map(|s| s.name.clone())
        .collect()
}

/// The folder below a scenario's directory that sandboxed workflows see (read-only): where a
/// scenario puts what its workflows wait for ([`Stack::gate`]).
pub const SHARED_DIR: &str = "shared";

/// Copies `source` (relative to the workspace root) into `dir` with `runs.workdir.base` set
/// to `dir/runs`, and `dir/shared` added to `runs.sandbox.readOnlyPaths` (created).
fn write_engine_config(
    source: &Path,
    dir: &Path,
    max_concurrent_runs: Option<usize>,
) -> Result<PathBuf> {
    let source = test_support::workspace_root().join(source);
    let text = std::fs::read_to_string(&source)
        .with_context(|| format!("reading {}", source.display()))?;
    let mut doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", source.display()))?;
    // The copy lives elsewhere: workflow roots relative to the original are made absolute.
    let folder = source.parent().unwrap_or(Path::new("/"));
    if let Some(roots) = doc
        .get_mut("engine")
        .and_then(|e| e.get_mut("allowedWorkflowRoots"))
        .and_then(serde_yaml_ng::Value::as_sequence_mut)
    {
        for root in roots.iter_mut() {
            if let Some(r) = root.as_str().filter(|r| !r.starts_with('/')) {
                let joined = folder.join(r);
                let path = std::fs::canonicalize(&joined).unwrap_or(joined);
                *root = path.display().to_string().into();
            }
        }
    }
    if let Some(slots) = max_concurrent_runs {
        doc.get_mut("engine")
            .and_then(serde_yaml_ng::Value::as_mapping_mut)
            .context("the engine config has no `engine` mapping")?
            .insert("maxConcurrentRuns".into(), slots.into());
    }
    let runs = doc
        .as_mapping_mut()
        .context("engine config is not a mapping")?
        .entry("runs".into())
        .or_insert_with(|| serde_yaml_ng::Value::Mapping(Default::default()));
    let workdir = runs
        .as_mapping_mut()
        .context("runs is not a mapping")?
        .entry("workdir".into())
        .or_insert_with(|| serde_yaml_ng::Value::Mapping(Default::default()));
    workdir
        .as_mapping_mut()
        .context("runs.workdir is not a mapping")?
        .insert("base".into(), dir.join("runs").display().to_string().into());
    // Workflows run sandboxed: the scenario's shared folder is the one host path of the
    // harness's that they see, read-only, besides the defaults.
    let shared = dir.join(SHARED_DIR);
    std::fs::create_dir_all(&shared).with_context(|| format!("creating {}", shared.display()))?;
    let sandbox = runs
        .as_mapping_mut()
        .context("runs is not a mapping")?
        .entry("sandbox".into())
        .or_insert_with(|| serde_yaml_ng::Value::Mapping(Default::default()))
        .as_mapping_mut()
        .context("runs.sandbox is not a mapping")?;
    let paths = sandbox
        .entry("readOnlyPaths".into())
        .or_insert_with(|| {
            common::config::DEFAULT_READ_ONLY_PATHS
                .iter()
                .map(|p| serde_yaml_ng::Value::from(*p))
                .collect()
        })
        .as_sequence_mut()
        .context("runs.sandbox.readOnlyPaths is not a list")?;
    paths.push(shared.display().to_string().into());
    let path = dir.join("engine.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(&doc)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
