//! `metis-api` settings, read from the environment: the API's own are [`SETTINGS`] (their
//! defaults are the constants below, which the code applies), the NATS ones
//! [`common::nats::SETTINGS`], authentication's [`crate::auth::SETTINGS`]. The book's settings
//! page is generated from these tables. An empty variable counts as unset; a bad value is an
//! error that names the variable.
//!
//! Logging and export (`RUST_LOG`, `LOG_FORMAT`, `OTEL_EXPORTER_OTLP_ENDPOINT`) are read by the
//! `telemetry` crate.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use common::settings::{Setting, literal, millis};

/// Default `APP_HOST`.
pub const DEFAULT_HOST: &str = "0.0.0.0";
/// Default `APP_PORT`.
pub const DEFAULT_PORT: u16 = 8080;
/// Default `REAPER_INTERVAL_MS`.
pub const DEFAULT_REAPER_INTERVAL: Duration = Duration::from_millis(2000);
/// Default `HTTP_HEADER_TIMEOUT_MS`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_millis(10_000);
/// Default `HTTP_BODY_TIMEOUT_MS`.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_millis(30_000);
/// Default `MAX_UNFINISHED_RUNS_PER_USER`.
pub const DEFAULT_MAX_UNFINISHED_PER_USER: u64 = 1000;
/// Default `MAX_STORED_RUNS_PER_USER`.
pub const DEFAULT_MAX_STORED_RUNS_PER_USER: u64 = 100_000;
/// Default `MAX_LOG_BYTES_PER_USER` (2 GiB: a quarter of the whole log store).
pub const DEFAULT_MAX_LOG_BYTES_PER_USER: u64 = 2 * 1024 * 1024 * 1024;
/// Default `RETENTION_MAX_AGE_S` (30 days).
pub const DEFAULT_RETENTION_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default `SHUTDOWN_GRACE_MS`.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_millis(10_000);

/// The API's own settings (see [`common::settings`]).
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "APP_HOST",
        meaning: "address to bind",
        default: || literal(DEFAULT_HOST),
    },
    Setting {
        name: "APP_PORT",
        meaning: "port to bind; `0` = ephemeral (the bound address is logged as `listening`)",
        default: || literal(DEFAULT_PORT),
    },
    Setting {
        name: "REAPER_INTERVAL_MS",
        meaning: "how often the reaper and reconciler look at the runs not yet finished (runs of vanished engines are failed, QUEUED runs without a message are dispatched again); at most half of `ENGINE_TTL_MS`",
        default: || millis(DEFAULT_REAPER_INTERVAL),
    },
    Setting {
        name: "MAX_UNFINISHED_RUNS_PER_USER",
        meaning: "how many runs one user may have not yet terminal (queued or running); a create past it is a 429 naming the limit and the user's usage, with `Retry-After`",
        default: || literal(DEFAULT_MAX_UNFINISHED_PER_USER),
    },
    Setting {
        name: "MAX_STORED_RUNS_PER_USER",
        meaning: "how many runs (any state) one user may have stored; a create past it is a 429 naming the limit and the usage (runs leave with `RETENTION_MAX_AGE_S`)",
        default: || literal(DEFAULT_MAX_STORED_RUNS_PER_USER),
    },
    Setting {
        name: "MAX_LOG_BYTES_PER_USER",
        meaning: "how many bytes of output lines one user may have stored; a create past it is a 429 naming the limit and the usage, and a run stores at most what is left of it (then a `[metis] output truncated` line)",
        default: || literal(DEFAULT_MAX_LOG_BYTES_PER_USER),
    },
    Setting {
        name: "RETENTION_MAX_AGE_S",
        meaning: "how long a finished run is kept, its record and its output lines together (counted from its creation); older ones are deleted by the API's periodic pass",
        default: || literal(DEFAULT_RETENTION_MAX_AGE.as_secs()),
    },
    Setting {
        name: "HTTP_HEADER_TIMEOUT_MS",
        meaning: "how long a client may take to send a request's head (on a new or a kept-alive connection) before the connection is closed",
        default: || millis(DEFAULT_HEADER_TIMEOUT),
    },
    Setting {
        name: "HTTP_BODY_TIMEOUT_MS",
        meaning: "how long a client may take to send a request's body; past it the request is a 408",
        default: || millis(DEFAULT_BODY_TIMEOUT),
    },
    Setting {
        name: "SHUTDOWN_GRACE_MS",
        meaning: "after SIGTERM/SIGINT, how long requests in flight may take to finish before the process exits anyway (a stalled client cannot hold it)",
        default: || millis(DEFAULT_SHUTDOWN_GRACE),
    },
    Setting {
        name: "ENGINE_TTL_MS",
        meaning: "how long an engine instance may go without a heartbeat before its runs are failed (keep it several times the engines' `HEARTBEAT_INTERVAL_MS`)",
        default: || millis(common::nats::DEFAULT_ENGINE_TTL),
    },
];

/// Settings of one API process.
#[derive(Debug, Clone)]
pub struct Config {
    /// `APP_HOST`.
    pub host: String,
    /// `APP_PORT`.
    pub port: u16,
    /// `NATS_URL`.
    pub nats_url: String,
    /// `REAPER_INTERVAL_MS`.
    pub reaper_interval: Duration,
    /// `ENGINE_TTL_MS`.
    pub engine_ttl: Duration,
    /// How callers are identified.
    pub auth: crate::auth::Auth,
    /// How the API authenticates to NATS.
    pub nats_auth: common::nats::NatsAuth,
    /// `NATS_REPLICAS` (`None`: from the server).
    pub nats_replicas: Option<usize>,
    /// `NATS_PING_INTERVAL_MS`.
    pub nats_ping_interval: Duration,
    /// `HTTP_HEADER_TIMEOUT_MS`.
    pub header_timeout: Duration,
    /// `HTTP_BODY_TIMEOUT_MS`.
    pub body_timeout: Duration,
    /// `SHUTDOWN_GRACE_MS`.
    pub shutdown_grace: Duration,
    /// `MAX_UNFINISHED_RUNS_PER_USER`.
    pub max_unfinished_per_user: u64,
    /// `MAX_STORED_RUNS_PER_USER`.
    pub max_stored_runs_per_user: u64,
    /// `MAX_LOG_BYTES_PER_USER`.
    pub max_log_bytes_per_user: u64,
    /// `RETENTION_MAX_AGE_S`.
    pub retention_max_age: Duration,
}

impl Config {
    /// Reads the variables in the module docs; a bad value is an error naming the variable.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`Config::from_env`] with any lookup (for tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let auth = crate::auth::Auth::from_lookup(&get, Path::new("."))?;
        let nats_auth = common::nats::NatsAuth::from_lookup(&get).map_err(anyhow::Error::msg)?;
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let port = match get("APP_PORT") {
            Some(v) => v
                .trim()
                .parse::<u16>()
                .with_context(|| format!("APP_PORT must be a port number (0-65535), got '{v}'"))?,
            None => DEFAULT_PORT,
        };
        let reaper_ms = match get("REAPER_INTERVAL_MS") {
            Some(v) => v
                .trim()
                .parse::<u64>()
                .with_context(|| format!("REAPER_INTERVAL_MS must be milliseconds, got '{v}'"))?,
            None => u64::try_from(DEFAULT_REAPER_INTERVAL.as_millis()).unwrap_or(u64::MAX),
        };
        if reaper_ms == 0 {
            bail!("REAPER_INTERVAL_MS must be at least 1");
        }
        let ttl = match get("ENGINE_TTL_MS") {
            Some(v) => {
                let ms = v
                    .trim()
                    .parse::<u64>()
                    .with_context(|| format!("ENGINE_TTL_MS must be milliseconds, got '{v}'"))?;
                if ms == 0 {
                    bail!("ENGINE_TTL_MS must be at least 1");
                }
                Duration::from_millis(ms)
            }
            None => common::nats::DEFAULT_ENGINE_TTL,
        };
        let nats_url = get("NATS_URL").unwrap_or_else(|| common::nats::DEFAULT_URL.to_owned());
        common::nats::server_addrs(&nats_url).map_err(|m| anyhow::anyhow!("NATS_URL: {m}"))?;
        let nats_replicas = common::nats::replicas_setting(get("NATS_REPLICAS").as_deref())
            .map_err(anyhow::Error::msg)?;
        let nats_ping_interval =
            common::nats::ping_interval_setting(get("NATS_PING_INTERVAL_MS").as_deref())
                .map_err(anyhow::Error::msg)?;
        let positive_ms = |name: &str, default: Duration| -> anyhow::Result<Duration> {
            match get(name) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
                    _ => bail!(
                        "{name} must be a whole number of milliseconds, at least 1, got '{v}'"
                    ),
                },
            }
        };
        let header_timeout = positive_ms("HTTP_HEADER_TIMEOUT_MS", DEFAULT_HEADER_TIMEOUT)?;
        let body_timeout = positive_ms("HTTP_BODY_TIMEOUT_MS", DEFAULT_BODY_TIMEOUT)?;
        let shutdown_grace = positive_ms("SHUTDOWN_GRACE_MS", DEFAULT_SHUTDOWN_GRACE)?;
        let max_unfinished_per_user = match get("MAX_UNFINISHED_RUNS_PER_USER") {
            None => DEFAULT_MAX_UNFINISHED_PER_USER,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n > 0 => n,
                _ => bail!(
                    "MAX_UNFINISHED_RUNS_PER_USER must be a whole number, at least 1, got '{v}'"
                ),
            },
        };
        let whole = |name: &str, default: u64| -> anyhow::Result<u64> {
            match get(name) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => bail!("{name} must be a whole number, at least 1, got '{v}'"),
                },
            }
        };
        let max_stored_runs_per_user =
            whole("MAX_STORED_RUNS_PER_USER", DEFAULT_MAX_STORED_RUNS_PER_USER)?;
        let max_log_bytes_per_user =
            whole("MAX_LOG_BYTES_PER_USER", DEFAULT_MAX_LOG_BYTES_PER_USER)?;
        let retention_max_age = Duration::from_secs(whole(
            "RETENTION_MAX_AGE_S",
            DEFAULT_RETENTION_MAX_AGE.as_secs(),
        )?);
        let reaper_interval = Duration::from_millis(reaper_ms);
        if reaper_interval * 2 > ttl {
            bail!(
                "REAPER_INTERVAL_MS ({reaper_ms}) must be at most half of ENGINE_TTL_MS ({}): the reaper could not tell a dead engine from its own gaps",
                ttl.as_millis()
            );
        }
        Ok(Self {
            host: get("APP_HOST").unwrap_or_else(|| DEFAULT_HOST.to_owned()),
            port,
            nats_url,
            nats_replicas,
            nats_ping_interval,
            reaper_interval,
            engine_ttl: ttl,
            auth,
            nats_auth,
            header_timeout,
            body_timeout,
            shutdown_grace,
            max_unfinished_per_user,
            max_stored_runs_per_user,
            max_log_bytes_per_user,
            retention_max_age,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `AUTH_MODE=header` plus `vars`, so the tests need no key.
    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let mut vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        vars.push(("AUTH_MODE".to_owned(), "header".to_owned()));
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn defaults_and_errors() {
        let c = Config::from_lookup(lookup(&[])).unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.nats_url.as_str()),
            ("0.0.0.0", 8080, "nats://127.0.0.1:4222")
        );
        let err = Config::from_lookup(lookup(&[("APP_PORT", "http")])).unwrap_err();
        assert!(format!("{err:#}").contains("APP_PORT"), "{err:#}");
        let err = Config::from_lookup(lookup(&[("REAPER_INTERVAL_MS", "0")])).unwrap_err();
        assert!(format!("{err:#}").contains("REAPER_INTERVAL_MS"), "{err:#}");
        assert_eq!(c.engine_ttl, common::nats::DEFAULT_ENGINE_TTL);
        let err = Config::from_lookup(lookup(&[
            ("REAPER_INTERVAL_MS", "6000"),
            ("ENGINE_TTL_MS", "10000"),
        ]))
        .unwrap_err();
        assert!(format!("{err:#}").contains("at most half"), "{err:#}");
        for bad in ["0", "soon"] {
            let err = Config::from_lookup(lookup(&[("ENGINE_TTL_MS", bad)])).unwrap_err();
            assert!(format!("{err:#}").contains("ENGINE_TTL_MS"), "{err:#}");
        }
        let c = Config::from_lookup(lookup(&[("APP_PORT", "0")])).unwrap();
        assert_eq!(c.port, 0);
        // Without AUTH_MODE=header, a key is required.
        let err = Config::from_lookup(|_| None).unwrap_err();
        assert!(format!("{err:#}").contains("AUTH_JWT_SECRET"), "{err:#}");
    }
}
