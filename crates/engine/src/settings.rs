//! The engine's settings from the environment: its own are [`SETTINGS`] (their defaults are
//! the constants below, which the code applies), the NATS ones, credentials included,
//! [`common::nats::SETTINGS`]; workflows never see any of them. The book's settings page is
//! generated from these tables.
//!
//! Logging and span export read `RUST_LOG`, `LOG_FORMAT` and `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (see the `telemetry` crate). An empty variable counts as unset; a bad value is an error that
//! names the variable.

use std::path::PathBuf;
use std::time::Duration;

use common::settings::{Setting, literal, millis};

use crate::EngineError;

/// The engine's own settings (see [`common::settings`]).
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "ENGINE_CONFIG_PATH",
        meaning: "the engine.yaml",
        default: || literal(DEFAULT_CONFIG_PATH),
    },
    Setting {
        name: "HEALTH_HOST",
        meaning: "address `/healthz` and `/readyz` listen on; loopback by default, `0.0.0.0` for probes from other hosts",
        default: || literal(DEFAULT_HEALTH_HOST),
    },
    Setting {
        name: "HEALTH_PORT",
        meaning: "port of `/healthz` and `/readyz`; `0` = ephemeral (logged as `listening`)",
        default: || literal(DEFAULT_HEALTH_PORT),
    },
    Setting {
        name: "SHUTDOWN_GRACE_MS",
        meaning: "how long SIGTERM/SIGINT waits for in-flight runs",
        default: || millis(DEFAULT_SHUTDOWN_GRACE),
    },
    Setting {
        name: "HEARTBEAT_INTERVAL_MS",
        meaning: "how often the instance refreshes its registration (and checks its runs' records); keep it well under the API's `ENGINE_TTL_MS`",
        default: || millis(common::nats::DEFAULT_HEARTBEAT_INTERVAL),
    },
    Setting {
        name: "METIS_UNSAFE_NO_SANDBOX",
        meaning: "`1` runs workflows **without a sandbox**, as the engine's own user (development only: the engine warns at start-up and on every run, and `/service-info` shows `sandbox: none`); anything else, or unset, sandboxes every run and refuses to start where the machine cannot",
        default: || literal("unset (sandboxed)"),
    },
    Setting {
        name: "MAX_RUN_OUTPUT_BYTES",
        meaning: "output stored per run (stdout and stderr together); past it the rest is dropped and a `[metis] output truncated` line is stored",
        default: || literal(DEFAULT_MAX_RUN_OUTPUT),
    },
];

/// Default `ENGINE_CONFIG_PATH`.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/metis/engine.yaml";
/// Default `NATS_URL`.
pub const DEFAULT_NATS_URL: &str = common::nats::DEFAULT_URL;
/// Default `HEALTH_HOST`.
pub const DEFAULT_HEALTH_HOST: &str = "127.0.0.1";
/// Default `HEALTH_PORT`.
pub const DEFAULT_HEALTH_PORT: u16 = 8081;
/// Default `SHUTDOWN_GRACE_MS`.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_millis(10_000);
/// Default `MAX_RUN_OUTPUT_BYTES`.
pub const DEFAULT_MAX_RUN_OUTPUT: u64 = 64 * 1024 * 1024;

/// Everything the engine reads from its environment (besides telemetry's variables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `ENGINE_CONFIG_PATH`.
    pub config_path: PathBuf,
    /// `NATS_URL`.
    pub nats_url: String,
    /// `HEALTH_HOST`.
    pub health_host: String,
    /// `HEALTH_PORT`.
    pub health_port: u16,
    /// `SHUTDOWN_GRACE_MS`.
    pub shutdown_grace: Duration,
    /// `HEARTBEAT_INTERVAL_MS`.
    pub heartbeat_interval: Duration,
    /// `MAX_RUN_OUTPUT_BYTES`.
    pub max_run_output: u64,
    /// `METIS_UNSAFE_NO_SANDBOX=1`: workflows run unsandboxed.
    pub unsafe_no_sandbox: bool,
    /// NATS credentials.
    pub nats_auth: common::nats::NatsAuth,
    /// `NATS_REPLICAS` (`None`: from the server).
    pub nats_replicas: Option<usize>,
    /// `NATS_PING_INTERVAL_MS`.
    pub nats_ping_interval: Duration,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, EngineError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads variables through `lookup` (for tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, EngineError> {
        let var = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let health_port = match var("HEALTH_PORT") {
            None => DEFAULT_HEALTH_PORT,
            Some(v) => v.trim().parse::<u16>().map_err(|_| EngineError::Env {
                var: "HEALTH_PORT",
                value: v.clone(),
                reason: "is not a port number (0-65535)".into(),
            })?,
        };
        let shutdown_grace = match var("SHUTDOWN_GRACE_MS") {
            None => DEFAULT_SHUTDOWN_GRACE,
            Some(v) => {
                Duration::from_millis(v.trim().parse::<u64>().map_err(|_| EngineError::Env {
                    var: "SHUTDOWN_GRACE_MS",
                    value: v.clone(),
                    reason: "is not a whole number of milliseconds".into(),
                })?)
            }
        };
        let number = |name: &'static str, min: u64| -> Result<Option<u64>, EngineError> {
            let Some(v) = var(name) else { return Ok(None) };
            match v.trim().parse::<u64>() {
                Ok(n) if n >= min => Ok(Some(n)),
                _ => Err(EngineError::Env {
                    var: name,
                    value: v.clone(),
                    reason: format!("is not a whole number of at least {min}"),
                }),
            }
        };
        let heartbeat_interval = number("HEARTBEAT_INTERVAL_MS", 1)?.map_or(
            common::nats::DEFAULT_HEARTBEAT_INTERVAL,
            Duration::from_millis,
        );
        let max_run_output = number("MAX_RUN_OUTPUT_BYTES", 1)?.unwrap_or(DEFAULT_MAX_RUN_OUTPUT);
        let nats_url = var("NATS_URL").unwrap_or_else(|| DEFAULT_NATS_URL.to_owned());
        if let Err(reason) = common::nats::server_addrs(&nats_url) {
            return Err(EngineError::Env {
                var: "NATS_URL",
                value: nats_url,
                reason,
            });
        }
        let nats_replicas = common::nats::replicas_setting(var("NATS_REPLICAS").as_deref())
            .map_err(|reason| EngineError::Env {
                var: "NATS_REPLICAS",
                value: var("NATS_REPLICAS").unwrap_or_default(),
                reason,
            })?;
        let nats_auth =
            common::nats::NatsAuth::from_lookup(&lookup).map_err(EngineError::Credentials)?;
        let nats_ping_interval = common::nats::ping_interval_setting(
            var("NATS_PING_INTERVAL_MS").as_deref(),
        )
        .map_err(|reason| EngineError::Env {
            var: "NATS_PING_INTERVAL_MS",
            value: var("NATS_PING_INTERVAL_MS").unwrap_or_default(),
            reason,
        })?;
        let unsafe_no_sandbox = match var(crate::sandbox::UNSAFE_OPT_OUT)
            .as_deref()
            .map(str::trim)
        {
            None | Some("0") => false,
            Some("1") => true,
            Some(other) => {
                return Err(EngineError::Env {
                    var: "METIS_UNSAFE_NO_SANDBOX",
                    value: other.to_owned(),
                    reason: "must be 1 (run workflows unsandboxed) or 0/unset".into(),
                });
            }
        };
        let health_host = var("HEALTH_HOST")
            .map_or_else(|| DEFAULT_HEALTH_HOST.to_owned(), |h| h.trim().to_owned());
        if health_host.parse::<std::net::IpAddr>().is_err() {
            return Err(EngineError::Env {
                var: "HEALTH_HOST",
                value: health_host,
                reason: "is not an IP address".into(),
            });
        }
        Ok(Self {
            health_host,
            unsafe_no_sandbox,
            nats_auth,
            nats_replicas,
            nats_ping_interval,
            config_path: var("ENGINE_CONFIG_PATH")
                .map_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH), PathBuf::from),
            nats_url,
            health_port,
            shutdown_grace,
            heartbeat_interval,
            max_run_output,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, EngineError> {
        Settings::from_lookup(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn defaults_apply_when_unset_or_empty() {
        let s = settings(&[("HEALTH_PORT", " ")]).unwrap();
        assert_eq!(
            s,
            Settings {
                config_path: PathBuf::from(DEFAULT_CONFIG_PATH),
                nats_url: DEFAULT_NATS_URL.into(),
                health_host: DEFAULT_HEALTH_HOST.into(),
                health_port: DEFAULT_HEALTH_PORT,
                shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
                heartbeat_interval: common::nats::DEFAULT_HEARTBEAT_INTERVAL,
                max_run_output: DEFAULT_MAX_RUN_OUTPUT,
                unsafe_no_sandbox: false,
                nats_auth: common::nats::NatsAuth::None,
                nats_replicas: None,
                nats_ping_interval: common::nats::DEFAULT_PING_INTERVAL,
            }
        );
    }

    #[test]
    fn values_are_read() {
        let s = settings(&[
            ("ENGINE_CONFIG_PATH", "/x/engine.yaml"),
            ("NATS_URL", "nats://n:4222"),
            ("HEALTH_PORT", "0"),
            ("SHUTDOWN_GRACE_MS", "250"),
            ("HEARTBEAT_INTERVAL_MS", "100"),
            ("MAX_RUN_OUTPUT_BYTES", "4096"),
        ])
        .unwrap();
        assert_eq!(s.config_path, PathBuf::from("/x/engine.yaml"));
        assert_eq!(s.nats_url, "nats://n:4222");
        assert_eq!(s.health_port, 0);
        assert_eq!(s.shutdown_grace, Duration::from_millis(250));
        assert_eq!(s.heartbeat_interval, Duration::from_millis(100));
        assert_eq!(s.max_run_output, 4096);
    }

    #[test]
    fn the_sandbox_opt_out_is_explicit() {
        assert_eq!(crate::sandbox::UNSAFE_OPT_OUT, "METIS_UNSAFE_NO_SANDBOX");
        assert!(!settings(&[]).unwrap().unsafe_no_sandbox);
        assert!(
            !settings(&[("METIS_UNSAFE_NO_SANDBOX", "0")])
                .unwrap()
                .unsafe_no_sandbox
        );
        assert!(
            settings(&[("METIS_UNSAFE_NO_SANDBOX", "1")])
                .unwrap()
                .unsafe_no_sandbox
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("HEALTH_PORT", "http"),
            ("HEALTH_PORT", "70000"),
            ("SHUTDOWN_GRACE_MS", "-1"),
            ("NATS_URL", "nats://a b"),
            ("HEARTBEAT_INTERVAL_MS", "0"),
            ("MAX_RUN_OUTPUT_BYTES", "lots"),
            ("METIS_UNSAFE_NO_SANDBOX", "yes"),
            ("HEALTH_HOST", "everywhere"),
        ] {
            let err = settings(&[(var, value)]).unwrap_err().to_string();
            assert!(
                err.contains(var) && err.contains(value),
                "{var}={value}: {err}"
            );
        }
    }
}
