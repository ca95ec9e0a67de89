//! Domain types shared by `metis-api` and every engine.
//!
//! This crate owns the vocabulary both services speak over NATS: run ids and states
//! ([`RunId`], [`State`]), the HTTP request and the messages built from it ([`RunRequest`],
//! [`RunRequestMessage`], [`CancelMessage`]), the stored run record ([`RunRecord`]), the
//! `engine.yaml` format ([`config`]), request validation against an engine's config
//! ([`validate`]), argv building ([`command`]) and the NATS subject, stream and bucket names
//! ([`nats`]), the NATS plumbing ([`infra`]), start-up hardening ([`harden`]) and settings as
//! data ([`settings`]).

pub mod command;
pub mod config;
pub mod harden;
pub mod infra;
pub mod model;
pub mod nats;
pub mod settings;
pub mod validate;

pub use config::{
    ConfigError, EngineConfig, EngineSpec, FullEngineConfig, RunsConfig, SandboxConfig,
};
pub use model::{
    CancelMessage, EngineRegistration, LogLine, LogStream, RunId, RunLog, RunRecord, RunRequest,
    RunRequestMessage, State,
};
pub use validate::{ValidatedRun, ValidationError};
