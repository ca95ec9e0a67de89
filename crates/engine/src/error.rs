//! [`EngineError`]: every way the engine itself can fail, at start-up or during a run.
//!
//! Messages are lowercase fragments that read after "failed to", e.g. `failed to create the
//! workdir /runs/alice/…: permission denied`. A run that fails with one of these ends in
//! `SYSTEM_ERROR` with that sentence in its record's `error`.

use std::path::PathBuf;

/// A failure of the engine (never of the workflow process, which is `EXECUTOR_ERROR`).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// An environment variable has a value the engine cannot use.
    #[error("read {var}: '{value}' {reason}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The NATS credential settings are unusable (the message names the variable).
    #[error("read the NATS credentials: {0}")]
    Credentials(String),
    /// The engine's name and version collide with a registered engine's in NATS names.
    #[error("register the engine: {0}")]
    Collision(String),
    /// The engine.yaml could not be loaded (the message names the file and the key).
    #[error("load the engine config: {0}")]
    Config(#[from] common::ConfigError),
    /// NATS could not be reached.
    #[error("connect to NATS at {url}: {source}")]
    Connect {
        /// The `NATS_URL`.
        url: String,
        /// Why.
        source: async_nats::ConnectError,
    },
    /// A JetStream, KV or core NATS operation failed.
    #[error("{context}: {source}")]
    Nats {
        /// What was being done, e.g. `register the engine config`.
        context: String,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// SIGTERM/SIGINT handlers could not be installed.
    #[error("install the {signal} handler: {source}")]
    Signal {
        /// Which signal.
        signal: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The health server could not bind its port.
    #[error("bind the health server to {addr}: {source}")]
    Health {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The run's working directory could not be created.
    #[error("create the workdir {path}: {source}")]
    Workdir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The request does not pass this engine's config (the API checked it against the config
    /// registered in NATS; this engine's file is the one that counts).
    #[error("validate the request against this engine's config: {0}")]
    Validation(#[from] common::ValidationError),
    /// The command could not be built (template, or an [`crate::Engine::command`] hook).
    #[error("build the command: {0}")]
    Command(String),
    /// The workflow process could not be started.
    #[error("start {program}: {source}")]
    Spawn {
        /// `argv[0]`.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// Waiting for the workflow process failed.
    #[error("wait for the workflow process: {0}")]
    Wait(std::io::Error),
    /// Captured output could not be stored in the `METIS_LOGS` stream.
    #[error("publish the run's output lines: {0}")]
    Logs(String),
    /// This machine cannot provide the per-run sandbox (see [`crate::sandbox`]).
    #[error("set up the run sandbox: {0}")]
    Sandbox(String),
}

impl EngineError {
    /// A NATS failure with what was being done (a fragment that reads after "failed to").
    pub fn nats(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Nats {
            context: context.into(),
            source: source.into(),
        }
    }

    /// The full sentence stored in a run record's `error`: `failed to …`.
    #[must_use]
    pub fn sentence(&self) -> String {
        format!("failed to {self}")
    }
}

impl From<common::infra::InfraError> for EngineError {
    fn from(e: common::infra::InfraError) -> Self {
        // InfraError already says what was being done ("updating run …").
        Self::nats("talk to JetStream", e)
    }
}
