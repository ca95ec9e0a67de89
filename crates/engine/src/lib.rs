//! The engine runtime shared by every Metis engine.
//!
//! An engine binary is a few lines: implement [`Engine`] (usually only its
//! [`Engine::service_name`]) and hand it to [`run()`]:
//!
//! ```no_run
//! struct MyEngine;
//!
//! impl engine::Engine for MyEngine {
//!     fn service_name(&self) -> &str {
//!         "metis-engine-mine"
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     engine::main(MyEngine)
//! }
//! ```
//!
//! [`run()`] sets up tracing, reads the [`settings`] and the engine.yaml, and serves until
//! SIGTERM/SIGINT: it consumes run requests from JetStream ([`runtime`]), executes each one as
//! an OS process built from `commandTemplate` as an argv, never through a shell ([`run`](mod@run)),
//! stores its output lines ([`output`]), honours cancel requests ([`cancel`]) and answers
//! `/healthz` and `/readyz` ([`health`]).
//!
//! Modules: [`settings`] (environment), [`runtime`] (start-up, consuming, shutdown),
//! [`queues`] (fair claiming: one queue per user, served round-robin),
//! [`run`](mod@run) (one run's phases), [`cancel`], [`control`] (in-flight runs and their stop
//! flags), [`process`] (spawn and process-group signals), [`output`] (line capture and
//! publishing), [`outcome`] (exit status → state), [`workdir`], [`health`], [`error`],
//! [`keeper`] (workflow processes die with their engine), [`injected`] (bugs on purpose, for
//! the chaos tests; debug builds only), [`sandbox`] (each run in namespaces
//! of its own, as an identity of its own, with limits).

pub mod cancel;
pub mod control;
pub mod error;
pub mod health;
pub mod injected;
pub mod keeper;
pub mod outcome;
pub mod output;
pub mod process;
pub mod queues;
pub mod run;
pub mod runtime;
pub mod sandbox;
pub mod settings;
#[cfg(test)]
mod span_tests;
pub mod workdir;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use common::{EngineSpec, RunId, RunRequest, ValidatedRun};

pub use error::EngineError;
pub use runtime::{Running, bootstrap};
pub use settings::Settings;

/// What one engine implementation adds to the shared runtime.
///
/// The runtime does everything a command-line workflow needs; an implementation names its
/// service and may rewrite the argv of each run (add a flag, point at a config file it wrote
/// into the workdir, wrap the program). The argv is still executed without a shell.
pub trait Engine: Send + Sync + 'static {
    /// `service.name` of the spans and logs, e.g. `metis-engine-generic`.
    fn service_name(&self) -> &str;

    /// The final argv of a run, given the one built from `commandTemplate`. The default
    /// returns it unchanged. An error ends the run in SYSTEM_ERROR
    /// (use [`EngineError::Command`]).
    fn command(&self, ctx: &RunContext<'_>, argv: Vec<String>) -> Result<Vec<String>, EngineError> {
        let _ = ctx;
        Ok(argv)
    }
}

/// What [`Engine::command`] knows about the run.
#[derive(Debug, Clone, Copy)]
pub struct RunContext<'a> {
    /// The run.
    pub run_id: &'a RunId,
    /// Its owner.
    pub user_id: &'a str,
    /// The request as accepted by the API.
    pub request: &'a RunRequest,
    /// This engine's config.
    pub spec: &'a EngineSpec,
    /// The run's working directory (created; the process runs in it).
    pub workdir: &'a Path,
    /// The validated parameters and their argv pieces.
    pub validated: &'a ValidatedRun,
}

/// The whole `main` of an engine binary: serves as the [`keeper`] when started as one,
/// otherwise builds a Tokio runtime and calls [`run()`].
pub fn main<E: Engine>(engine: E) -> ExitCode {
    keeper::run_if_requested();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run(engine)),
        Err(e) => {
            eprintln!("error: failed to start the Tokio runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs an engine until SIGTERM or SIGINT: tracing first, then [`Settings::from_env`],
/// [`bootstrap`] and [`Running::run_until`]. Returns success after a graceful shutdown and
/// failure (after logging why) when start-up fails. Call inside a Tokio runtime, after
/// [`keeper::run_if_requested`] (or use [`main()`]).
pub async fn run<E: Engine>(engine: E) -> ExitCode {
    let guard = telemetry::init_tracing(engine.service_name());
    let code = match serve(Arc::new(engine)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("failed to {e}");
            ExitCode::FAILURE
        }
    };
    drop(guard);
    code
}

async fn serve(engine: Arc<dyn Engine>) -> Result<(), EngineError> {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = |kind, name: &'static str| {
        signal(kind).map_err(|source| EngineError::Signal {
            signal: name,
            source,
        })
    };
    let mut term = signals(SignalKind::terminate(), "SIGTERM")?;
    let mut int = signals(SignalKind::interrupt(), "SIGINT")?;
    protect_process();
    let settings = Settings::from_env()?;
    let running = bootstrap(engine, settings).await?;
    running
        .run_until(async move {
            let which = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = which, "shutdown requested");
        })
        .await
}

/// Marks the engine non-dumpable: its `/proc/<pid>` files (`environ`, `mem`) then belong to
/// root, so a workflow running as the same OS user cannot read the engine's NATS credentials
/// from them, nor attach a debugger. (Root workflows are not stopped by this: run the engine
/// as an unprivileged user.)
fn protect_process() {
    match common::harden::non_dumpable() {
        Ok(()) => tracing::debug!("process marked non-dumpable"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot mark the engine non-dumpable; a workflow of the same user could read its environment")
        }
    }
}
