//! `metis-api`: the HTTP front of Metis.
//!
//! It validates run requests against the engine configs registered in NATS, stores runs in
//! the `metis_runs` KV bucket, dispatches them over JetStream with W3C trace context in the
//! message headers, relays cancels to the owning engine, and serves run state and logs back.
//! A reaper marks runs whose engine stopped heartbeating as SYSTEM_ERROR.
//!
//! Modules: [`auth`] (bearer tokens), [`config`] (environment), [`error`] (the JSON error body), [`extract`] (request
//! extractors with clear 4xx errors), [`routes`] (handlers and router), [`service`] (the
//! traced create and cancel operations), [`logs`] (reading captured output), [`reaper`], [`retention`] (finished runs leave by age, records and output together),
//! [`openapi`], [`request_schema`] (the engines' rules in the OpenAPI document), [`http_trace`] (the HTTP server span), [`server`] (serving with header, body and
//! shutdown deadlines).

pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod http_trace;
pub mod logs;
pub mod openapi;
pub mod reaper;
pub mod request_schema;
pub mod retention;
pub mod routes;
pub mod server;
pub mod service;
#[cfg(test)]
mod span_tests;

use std::sync::Arc;

use anyhow::Context as _;
use common::infra::Infra;
use telemetry::tracing::info;

pub use config::Config;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// Streams and buckets (behind an `Arc`: every request clones the state).
    pub infra: Arc<Infra>,
    /// The NATS connection (for core publishes and readiness).
    pub client: async_nats::Client,
    /// Settings.
    pub config: Arc<Config>,
    /// The registered engine configs, kept current by a watch on `metis_engine_configs`.
    pub configs: ConfigCache,
    /// How callers are identified (from the config).
    pub auth: Arc<auth::Auth>,
    /// Runs this process is creating right now (stored, message not yet acked): the
    /// reconciler leaves them alone, however slow a large publish is.
    pub dispatching: Dispatching,
    /// Serialises one user's quota check with the create that follows it (in this process).
    pub quota_locks: QuotaLocks,
    /// Unfinished runs by state, as the reaper's last pass counted them.
    pub active_counts: ActiveCounts,
}

/// Unfinished runs by state, as the reaper's last pass counted them (it reads every
/// unfinished record anyway): `/service-info` answers from here, so a request costs the same
/// however many runs there are; the counts are at most `REAPER_INTERVAL_MS` old.
#[derive(Clone, Default)]
pub struct ActiveCounts(Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>);

impl ActiveCounts {
    /// The counts of the last pass (empty before the first).
    #[must_use]
    pub fn get(&self) -> std::collections::BTreeMap<String, u64> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the counts.
    pub fn set(&self, counts: std::collections::BTreeMap<String, u64>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = counts;
    }
}

/// Striped locks, a user hashed to one of [`QuotaLocks::STRIPES`]: a user's creates check the
/// quota one at a time, so a burst of concurrent creates cannot all pass it (bounded memory,
/// whatever the number of users; another API replica checks on its own).
#[derive(Clone)]
pub struct QuotaLocks(Arc<Vec<tokio::sync::Mutex<()>>>);

impl Default for QuotaLocks {
    fn default() -> Self {
        Self(Arc::new(
            (0..Self::STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        ))
    }
}

impl QuotaLocks {
    /// How many locks users share.
    pub const STRIPES: usize = 64;

    /// The lock of `user`.
    pub async fn lock(&self, user: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        user.hash(&mut h);
        let i = usize::try_from(h.finish() % Self::STRIPES as u64).unwrap_or(0);
        self.0[i].lock().await
    }
}

/// The set behind [`AppState::dispatching`].
#[derive(Clone, Default)]
pub struct Dispatching(Arc<std::sync::Mutex<std::collections::HashSet<common::RunId>>>);

impl Dispatching {
    /// Marks `id` as being created until the returned guard is dropped.
    #[must_use]
    pub fn start(&self, id: common::RunId) -> DispatchGuard {
        self.lock().insert(id);
        DispatchGuard(self.clone(), id)
    }

    /// Whether `id` is being created by this process.
    #[must_use]
    pub fn contains(&self, id: &common::RunId) -> bool {
        self.lock().contains(id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<common::RunId>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Ends a [`Dispatching::start`] (also when the creating task is dropped).
pub struct DispatchGuard(Dispatching, common::RunId);

impl Drop for DispatchGuard {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

/// Engine configs by `metis_engine_configs` key, as last seen by a watch. A miss falls back to
/// reading the bucket, so a config registered a moment ago is never refused.
#[derive(Clone, Default)]
pub struct ConfigCache(
    Arc<std::sync::RwLock<std::collections::HashMap<String, common::EngineSpec>>>,
);

impl ConfigCache {
    /// The config stored under `key`, when the watch has seen it.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<common::EngineSpec> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// Every config the watch has seen, by engine name and version.
    #[must_use]
    pub fn all(&self) -> Vec<common::EngineSpec> {
        let mut specs: Vec<common::EngineSpec> = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        specs.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        specs
    }

    /// Follows the bucket until the watch ends (re-created by the caller).
    async fn follow(&self, infra: &Infra) -> Result<(), String> {
        use futures::StreamExt;
        let mut watch = infra
            .engine_configs
            .watch_all()
            .await
            .map_err(|e| e.to_string())?;
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| e.to_string())?;
            let mut map = self
                .0
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match serde_json::from_slice::<common::EngineSpec>(&entry.value) {
                Ok(spec) if entry.operation == async_nats::jetstream::kv::Operation::Put => {
                    map.insert(entry.key, spec);
                }
                _ => {
                    map.remove(&entry.key);
                }
            }
        }
        Ok(())
    }
}

/// Connects, prepares NATS, binds, and serves until SIGTERM or SIGINT.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    // Workflows may share the host and the user: keep the JWT secret and NATS credentials out
    // of their reach through /proc.
    if let Err(e) = common::harden::non_dumpable() {
        telemetry::tracing::warn!(error = %e, "cannot mark the API non-dumpable");
    }
    match &config.auth {
        auth::Auth::TrustHeader => telemetry::tracing::warn!(
            "AUTH_MODE=header: the x-user-id header is trusted as sent, so any client can act as any user; use it for local experiments only"
        ),
        auth::Auth::Jwt(_) => info!(auth = ?config.auth, "bearer tokens required"),
    }
    let client = config
        .nats_auth
        .apply(async_nats::ConnectOptions::new())
        .await
        .map_err(anyhow::Error::msg)?
        .name("metis-api")
        .ping_interval(config.nats_ping_interval)
        .retry_on_initial_connect()
        .connection_timeout(std::time::Duration::from_secs(5))
        .connect(common::nats::server_addrs(&config.nats_url).map_err(anyhow::Error::msg)?)
        .await
        .with_context(|| format!("connecting to NATS at {}", config.nats_url))?;
    let infra = Infra::ensure_with(client.clone(), config.nats_replicas)
        .await
        .with_context(|| {
            format!(
                "preparing NATS streams and buckets at {} (NATS_URL): is a nats-server with \
                 JetStream (-js) listening there, and do NATS_USER/NATS_PASSWORD match it?",
                config.nats_url
            )
        })?;
    let state = AppState {
        infra: Arc::new(infra),
        client,
        config: Arc::new(config.clone()),
        configs: ConfigCache::default(),
        auth: Arc::new(config.auth.clone()),
        dispatching: Dispatching::default(),
        quota_locks: QuotaLocks::default(),
        active_counts: ActiveCounts::default(),
    };
    let watcher = {
        let (cache, infra) = (state.configs.clone(), state.infra.clone());
        tokio::spawn(async move {
            loop {
                if let Err(e) = cache.follow(&infra).await {
                    telemetry::tracing::debug!(error = %e, "watching engine configs failed; watching again");
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await; // retry delay
            }
        })
    };

    // Key rotation without a restart: the JWK set file is read again periodically (and by the
    // verifier on an unknown kid).
    let jwks_refresher = match &config.auth {
        auth::Auth::Jwt(v) => v.jwk_source().map(|source| {
            let every = v.jwks_refresh();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let s = source.clone();
                    let _ = tokio::task::spawn_blocking(move || s.reload()).await;
                }
            })
        }),
        auth::Auth::TrustHeader => None,
    };
    let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port))
        .await
        .with_context(|| format!("binding {}:{}", config.host, config.port))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    info!(addr = %addr, "listening");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let reaper = tokio::spawn(reaper::run(state.clone(), stop_rx));
    let deadlines = server::Deadlines {
        header: config.header_timeout,
        shutdown_grace: config.shutdown_grace,
    };
    let app = routes::router(state);
    server::serve(listener, app, deadlines, shutdown_signal()).await;
    let _ = stop_tx.send(true);
    let _ = reaper.await;
    watcher.abort();
    if let Some(task) = jwks_refresher {
        task.abort();
    }
    info!("shut down");
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => info!(signal = "SIGTERM", "shutting down"),
        _ = int.recv() => info!(signal = "SIGINT", "shutting down"),
    }
}
