//! `metis-api` settings, read from the environment.
//!
//! | variable | meaning | default |
//! | --- | --- | --- |
//! | `APP_HOST` | address to bind | `0.0.0.0` |
//! | `APP_PORT` | port to bind; `0` = ephemeral (the bound address is logged as `listening`) | `8080` |
//! | `NATS_URL` | NATS server with JetStream; several, comma-separated, for a cluster (the client fails over) | `nats://127.0.0.1:4222` |
//! | `NATS_REPLICAS` | copies of each stream and bucket (1–5) | 3 on a cluster, else 1 |
//! | `NATS_PING_INTERVAL_MS` | how often the API pings its NATS server; two unanswered pings and it fails over | `5000` |
//! | `REAPER_INTERVAL_MS` | how often the reaper and reconciler look at the runs not yet finished (runs of vanished engines are failed, QUEUED runs without a message are dispatched again) | `2000` |
//! | `ENGINE_TTL_MS` | how long an engine instance may go without a heartbeat before its runs are failed (keep it several times the engines' `HEARTBEAT_INTERVAL_MS`) | `10000` |
//!
//! Authentication (`AUTH_MODE`, `AUTH_JWT_*`, `AUTH_JWKS_FILE`) is described in [`crate::auth`];
//! NATS credentials (`NATS_USER`/`NATS_PASSWORD`, `NATS_TOKEN`, `NATS_CREDS_FILE`) in
//! [`common::nats::NatsAuth`].
//!
//! Logging and export (`RUST_LOG`, `LOG_FORMAT`, `OTEL_EXPORTER_OTLP_ENDPOINT`) are read by the
//! `telemetry` crate.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

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
            None => 8080,
        };
        let reaper_ms = match get("REAPER_INTERVAL_MS") {
            Some(v) => v
                .trim()
                .parse::<u64>()
                .with_context(|| format!("REAPER_INTERVAL_MS must be milliseconds, got '{v}'"))?,
            None => 2000,
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
        let nats_url = get("NATS_URL").unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned());
        common::nats::server_addrs(&nats_url).map_err(|m| anyhow::anyhow!("NATS_URL: {m}"))?;
        let nats_replicas = common::nats::replicas_setting(get("NATS_REPLICAS").as_deref())
            .map_err(anyhow::Error::msg)?;
        let nats_ping_interval =
            common::nats::ping_interval_setting(get("NATS_PING_INTERVAL_MS").as_deref())
                .map_err(anyhow::Error::msg)?;
        let reaper_interval = Duration::from_millis(reaper_ms);
        if reaper_interval * 2 > ttl {
            bail!(
                "REAPER_INTERVAL_MS ({reaper_ms}) must be at most half of ENGINE_TTL_MS ({}): the reaper could not tell a dead engine from its own gaps",
                ttl.as_millis()
            );
        }
        Ok(Self {
            host: get("APP_HOST").unwrap_or_else(|| "0.0.0.0".to_owned()),
            port,
            nats_url,
            nats_replicas,
            nats_ping_interval,
            reaper_interval,
            engine_ttl: ttl,
            auth,
            nats_auth,
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
