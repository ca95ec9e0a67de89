//! Start-up, the consume loop, heartbeats and graceful shutdown of one engine instance.
//!
//! [`bootstrap`] loads the engine.yaml, connects to NATS, creates the streams and buckets,
//! stores the engine's config in `metis_engine_configs` (persistent, so the API accepts runs
//! while no instance runs), registers the instance in `metis_engines` (TTL, refreshed every
//! [`common::nats::HEARTBEAT_INTERVAL`]), creates the durable pull consumer shared by every
//! instance of this engine name and version (for messages of earlier versions) and opens the
//! per-user queues ([`crate::queues`]), subscribes to its cancel subject and starts the
//! health server. [`Running::run_until`] consumes runs until the shutdown future resolves.
//!
//! **Consuming.** A message is claimed only when a `maxConcurrentRuns` permit is free, one at
//! a time with a no-wait fetch from the user whose turn it is ([`crate::queues`]), so an idle
//! instance never holds messages another instance could run and one user's backlog never
//! holds back another user. Each message is handled in its own task ([`crate::run::handle_message`]).
//!
//! **Delivery.** Each run's message is on its own subject (`….<user>.<run_id>`), delivered at most
//! [`MAX_DELIVER`] times; a message that cannot be handled that often is left to the API's
//! reconciler, which fails or re-dispatches its run.
//!
//! **Shutdown.** Stop claiming (a message claimed as the engine stops goes back to the
//! stream), wait up to `SHUTDOWN_GRACE_MS` for the runs in flight, then SIGKILL the process
//! groups that remain and record those runs SYSTEM_ERROR, delete the registration, return.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::Stream;
use bytes::Bytes;
use chrono::Utc;
use common::infra::{Decision, Infra};
use common::nats;
use common::{EngineRegistration, FullEngineConfig, State};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::control::{Registry, StopAction};
use crate::outcome::StopReason;
use crate::queues::{Claim, ConsumerSettings, Queues};
use crate::settings::Settings;
use crate::{Engine, EngineError, cancel, health, process, run};

/// How long JetStream waits for the ack of a delivered run message before redelivering it.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// After the grace period and SIGKILL, how long runs get to record their result.
const FINALIZE_TIMEOUT: Duration = Duration::from_secs(10);
/// Delay before retrying after a failed pull request.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// How often JetStream delivers one run message before giving up on it (part of the NATS
/// layout, so declared with it: [`common::nats::MAX_DELIVER`]).
pub const MAX_DELIVER: i64 = common::nats::MAX_DELIVER;
/// How long a start-up write may keep failing for a reason that passes (see [`startup_retry`]).
const STARTUP_RETRY: Duration = Duration::from_secs(10);

/// What every task of one instance shares.
pub struct Shared {
    /// The engine implementation (command hook).
    pub engine: Arc<dyn Engine>,
    /// The loaded engine.yaml.
    pub config: FullEngineConfig,
    /// This instance's id (`metis.cancel.<id>`, `engine_id` in run records).
    pub engine_id: String,
    /// Streams and buckets.
    pub infra: Infra,
    /// Runs in flight here.
    pub registry: Registry,
    /// `runs.cancelGracePeriodMs`.
    pub cancel_grace: Duration,
    /// Kills the runs' process groups if this engine dies.
    pub keeper: crate::keeper::Keeper,
    /// `MAX_RUN_OUTPUT_BYTES`.
    pub max_run_output: u64,
    /// Each run's sandbox.
    pub sandbox: crate::sandbox::Sandbox,
}

/// An engine instance that has started and is ready to consume.
pub struct Running {
    shared: Arc<Shared>,
    client: async_nats::Client,
    queues: Queues,
    cancel_sub: Option<async_nats::Subscriber>,
    consuming: Arc<AtomicBool>,
    health_task: tokio::task::JoinHandle<()>,
    health_stop: watch::Sender<bool>,
    started_at: chrono::DateTime<Utc>,
    shutdown_grace: Duration,
    heartbeat_interval: Duration,
}

/// Starts an instance: everything up to the `engine ready` log line.
pub async fn bootstrap(
    engine: Arc<dyn Engine>,
    settings: Settings,
) -> Result<Running, EngineError> {
    let config = FullEngineConfig::load(&settings.config_path)?;
    // Fail closed, before anything is registered: no sandbox, no engine.
    let sandbox = crate::sandbox::Sandbox::open(
        &config,
        settings.unsafe_no_sandbox,
        &settings.nats_auth.secret_files(),
    )
    .await?;
    let spec = &config.engine;
    let engine_id = spec
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());

    let client = settings
        .nats_auth
        .apply(async_nats::ConnectOptions::new())
        .await
        .map_err(EngineError::Credentials)?
        .name(format!("{}/{}", engine.service_name(), engine_id))
        .ping_interval(settings.nats_ping_interval)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("connected to NATS"),
                async_nats::Event::Disconnected => {
                    tracing::warn!("disconnected from NATS; reconnecting")
                }
                other => tracing::debug!(event = %other, "NATS event"),
            }
        })
        .connect(
            common::nats::server_addrs(&settings.nats_url).map_err(|reason| EngineError::Env {
                var: "NATS_URL",
                value: settings.nats_url.clone(),
                reason,
            })?,
        )
        .await
        .map_err(|source| EngineError::Connect {
            url: settings.nats_url.clone(),
            source,
        })?;
    let infra = Infra::ensure_with(client.clone(), settings.nats_replicas)
        .await
        .map_err(|e| EngineError::nats("create the NATS streams and buckets", e))?;

    let spec_json =
        serde_json::to_vec(spec).map_err(|e| EngineError::nats("encode the engine config", e))?;
    let key = nats::engine_config_key(&spec.name, &spec.version);
    register_config(&infra, spec, &key, Bytes::from(spec_json)).await?;

    let started_at = Utc::now();
    let cancel_grace = Duration::from_millis(config.runs.cancel_grace_period_ms);
    let shared = Arc::new(Shared {
        engine,
        config,
        engine_id,
        infra,
        registry: Registry::default(),
        cancel_grace,
        keeper: crate::keeper::Keeper::default(),
        max_run_output: settings.max_run_output,
        sandbox,
    });
    startup_retry("register the engine instance", || {
        register(&shared, started_at)
    })
    .await
    .map_err(|e| EngineError::nats("register the engine instance", e))?;
    fail_orphaned_runs(&shared).await;

    let (stream, legacy) =
        startup_retry("create the run consumer", || create_consumer(&shared)).await?;
    let spec = &shared.config.engine;
    let queues = Queues::open(
        &client,
        stream,
        &spec.name,
        &spec.version,
        run_prefixes(&shared),
        legacy,
        ConsumerSettings {
            ack_wait: ACK_WAIT,
            max_deliver: MAX_DELIVER,
        },
    )
    .await
    .map_err(|e| EngineError::nats("subscribe to new runs", e))?;
    let cancel_sub = client
        .subscribe(nats::cancel_subject(&shared.engine_id))
        .await
        .map_err(|e| EngineError::nats("subscribe to cancel requests", e))?;

    let consuming = Arc::new(AtomicBool::new(false));
    let (health_stop, health_rx) = watch::channel(false);
    let health_task = health::serve(
        &settings.health_host,
        settings.health_port,
        health::Health {
            client: client.clone(),
            consuming: consuming.clone(),
        },
        health_rx,
    )
    .await?;

    let spec = &shared.config.engine;
    crate::injected::warn_if_injected();
    tracing::info!(engine_id = %shared.engine_id, name = %spec.name, version = %spec.version, "engine ready");
    Ok(Running {
        shared,
        client,
        queues,
        cancel_sub: Some(cancel_sub),
        consuming,
        health_task,
        health_stop,
        started_at,
        shutdown_grace: settings.shutdown_grace,
        heartbeat_interval: settings.heartbeat_interval,
    })
}

/// Runs that a previous instance with this same id left non-terminal (a fixed `engine.id` and
/// a crash): nothing runs them now, and the reaper cannot tell, since this id heartbeats again.
async fn fail_orphaned_runs(shared: &Shared) {
    let me = shared.engine_id.as_str();
    let ids = match shared.infra.active_runs().await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "could not look for runs a previous instance left behind");
            return;
        }
    };
    for id in ids {
        let Ok(Some((rec, _))) = shared.infra.get_run(&id).await else {
            continue;
        };
        if rec.state.is_terminal()
            || rec.state == State::Queued
            || rec.engine_id.as_deref() != Some(me)
        {
            continue;
        }
        let reason = "the engine instance restarted while the run was in flight".to_owned();
        let changed = shared
            .infra
            .update_run(&rec.run_id, |r| match r {
                Some(r)
                    if !r.state.is_terminal()
                        && r.state != State::Queued
                        && r.engine_id.as_deref() == Some(me) =>
                {
                    r.state = State::SystemError;
                    r.error = Some(reason.clone());
                    Decision::Write(true)
                }
                _ => Decision::Keep(false),
            })
            .await;
        if matches!(changed, Ok(true)) {
            tracing::warn!(run_id = %rec.run_id, "a run left in flight by a previous instance with this id is now SYSTEM_ERROR");
        }
    }
}

/// The engine's subject prefixes, one per workflow type and type version.
fn run_prefixes(shared: &Shared) -> Vec<String> {
    let spec = &shared.config.engine;
    let mut prefixes = Vec::new();
    for t in &spec.workflow_types {
        for v in &spec.workflow_type_versions {
            prefixes.push(nats::run_subject(&spec.name, &spec.version, t, v));
        }
    }
    prefixes.sort();
    prefixes.dedup();
    prefixes
}

/// The run stream and the consumer shared by every instance, for messages in the layout of
/// earlier versions (without the user token); the per-user consumers are [`Queues`]'.
async fn create_consumer(
    shared: &Shared,
) -> Result<(Stream, (PullConsumer, pull::Config)), EngineError> {
    let spec = &shared.config.engine;
    let name = nats::consumer_name(&spec.name, &spec.version);
    let mut subjects = Vec::new();
    for prefix in run_prefixes(shared) {
        // `prefix.<run_id>` and `prefix` itself are where APIs of earlier versions published
        // runs (rolling upgrades); `prefix.<user>.<run_id>` is claimed per user.
        subjects.push(format!("{prefix}.*"));
        subjects.push(prefix);
    }
    let stream = shared
        .infra
        .js
        .get_stream(nats::RUNS_STREAM)
        .await
        .map_err(|e| EngineError::nats(format!("open stream {}", nats::RUNS_STREAM), e))?;
    let config = pull::Config {
        durable_name: Some(name.clone()),
        description: Some(format!("runs for engine {} {}", spec.name, spec.version)),
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_deliver: MAX_DELIVER,
        filter_subjects: subjects,
        ..Default::default()
    };
    let consumer = stream
        .create_consumer(config.clone())
        .await
        .map_err(|e| EngineError::nats(format!("create consumer {name}"), e))?;
    Ok((stream, (consumer, config)))
}

/// Whether a NATS error at start-up is one that passes by itself: a JetStream cluster places a
/// stream that was just created on its servers asynchronously, so for a moment a write through
/// another server answers "no stream found" (or times out during an election).
fn transient(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    [
        "no stream found",
        "stream not found",
        "no responders",
        "timed out",
        "timeout",
    ]
    .iter()
    .any(|t| e.contains(t))
}

/// Runs a start-up `step` again, with a growing pause, while it fails with a [`transient`]
/// error, for at most [`STARTUP_RETRY`]; any other error, or the last one, is returned.
async fn startup_retry<T, E, F, Fut>(what: &str, mut step: F) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + STARTUP_RETRY;
    let mut pause = Duration::from_millis(50);
    loop {
        match step().await {
            Ok(v) => return Ok(v),
            Err(e)
                if transient(&e.to_string()) && tokio::time::Instant::now() + pause < deadline =>
            {
                tracing::warn!(error = %e, "could not {what} yet; trying again (a stream created a moment ago may not be ready on this server)");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
}

async fn register(
    shared: &Shared,
    started_at: chrono::DateTime<Utc>,
) -> Result<(), async_nats::Error> {
    let spec = &shared.config.engine;
    let reg = EngineRegistration {
        id: shared.engine_id.clone(),
        name: spec.name.clone(),
        version: spec.version.clone(),
        started_at,
        heartbeat_at: Utc::now(),
        sandbox: Some(shared.sandbox.kind().as_str().to_owned()),
        runs: shared
            .registry
            .all()
            .into_iter()
            .map(|(id, _)| id)
            .collect(),
    };
    shared
        .infra
        .engines
        .put(
            nats::token(&shared.engine_id),
            Bytes::from(serde_json::to_vec(&reg)?),
        )
        .await?;
    Ok(())
}

impl Running {
    /// This instance's id.
    #[must_use]
    pub fn engine_id(&self) -> &str {
        &self.shared.engine_id
    }

    /// Consumes runs until `shutdown` resolves, then shuts down gracefully.
    pub async fn run_until(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), EngineError> {
        let shared = self.shared.clone();
        let (stop_tx, stop_rx) = watch::channel(false);

        let queues = self.queues;
        let cancel_task = match self.cancel_sub.take() {
            Some(sub) => tokio::spawn(cancel::listen(shared.clone(), sub)),
            None => tokio::spawn(async {}),
        };
        // The heartbeat outlives the consume loop: runs finishing during the grace period
        // must not look abandoned to the API.
        let (heartbeat_stop, heartbeat_rx) = watch::channel(false);
        let heartbeat_task = tokio::spawn(heartbeat(
            shared.clone(),
            self.started_at,
            self.heartbeat_interval,
            heartbeat_rx,
        ));
        let consume_task = tokio::spawn(consume(
            shared.clone(),
            queues,
            self.consuming.clone(),
            stop_rx,
            self.shutdown_grace,
        ));

        shutdown.await;
        tracing::info!("shutting down: no new runs are taken");
        let _ = stop_tx.send(true);
        if let Err(e) = consume_task.await {
            tracing::error!(error = %e, "the consume loop failed");
        }
        let _ = heartbeat_stop.send(true);
        let _ = heartbeat_task.await;
        if let Err(e) = shared
            .infra
            .engines
            .delete(nats::token(&shared.engine_id))
            .await
        {
            tracing::warn!(error = %e, "failed to delete the engine registration; it expires with its TTL");
        }
        cancel_task.abort();
        let _ = self.health_stop.send(true);
        // Health answers are tiny: a client still connected after a moment is stalled, and
        // must not keep the engine from exiting.
        let mut health_task = self.health_task;
        if tokio::time::timeout(crate::health::STOP_GRACE, &mut health_task)
            .await
            .is_err()
        {
            tracing::warn!("a health client was still connected at shutdown; closing it");
            health_task.abort();
        }
        if let Err(e) = self.client.flush().await {
            tracing::debug!(error = %e, "flushing the NATS connection failed");
        }
        tracing::info!("engine stopped");
        Ok(())
    }
}

async fn heartbeat(
    shared: Arc<Shared>,
    started_at: chrono::DateTime<Utc>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut sweep: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let registered = register(&shared, started_at).await;
        match registered {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("heartbeat recovered");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "heartbeat failed; retrying (logged once)");
            }
            Err(_) => {}
        }
        // The sweep reads a record per run in flight: in a task of its own, so a slow store
        // never delays the next heartbeat (one sweep at a time).
        if sweep
            .as_ref()
            .is_none_or(tokio::task::JoinHandle::is_finished)
        {
            let shared = shared.clone();
            sweep = Some(tokio::spawn(async move { cancel::sweep(&shared).await }));
        }
    }
}

async fn consume(
    shared: Arc<Shared>,
    mut queues: Queues,
    consuming: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let permits = Arc::new(Semaphore::new(shared.config.engine.max_concurrent_runs));
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut failing = false;
    'fetch: loop {
        while let Some(done) = tasks.try_join_next() {
            log_join(done);
        }
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        // With a slot free: claim from the queue whose turn it is, or wait for a run.
        let msg = loop {
            if *stop.borrow() {
                break 'fetch;
            }
            let claimed = tokio::select! {
                c = queues.claim() => c,
                _ = stop.wait_for(|s| *s) => break 'fetch,
            };
            match claimed {
                Ok(claim) => {
                    consuming.store(true, Ordering::SeqCst);
                    if std::mem::take(&mut failing) {
                        tracing::info!("fetching runs again");
                    }
                    match claim {
                        Claim::Message(msg) => break msg,
                        Claim::Empty => tokio::select! {
                            () = queues.changed() => {}
                            _ = stop.wait_for(|s| *s) => break 'fetch,
                        },
                    }
                }
                Err(e) => {
                    consuming.store(false, Ordering::SeqCst);
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %e, "fetching runs failed; retrying (logged once)");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(RETRY_DELAY) => {}
                        _ = stop.wait_for(|s| *s) => break 'fetch,
                    }
                }
            }
        };
        if *stop.borrow() {
            // Claimed as the engine stops: give it straight back. On its last delivery, give
            // it up rather than strand it: the API's reconciler re-dispatches a QUEUED run
            // without a message.
            let last = msg.info().is_ok_and(|i| i.delivered >= MAX_DELIVER);
            let kind = if last {
                AckKind::Term
            } else {
                AckKind::Nak(None)
            };
            let _ = msg.ack_with(kind).await;
            break;
        }
        let shared = shared.clone();
        tasks.spawn(async move {
            run::handle_message(shared, *msg).await;
            drop(permit);
        });
    }
    consuming.store(false, Ordering::SeqCst);
    drain_runs(&shared, tasks, grace).await;
}

/// Waits up to `grace` for the runs in flight, then kills what is left and records it.
async fn drain_runs(shared: &Shared, mut tasks: JoinSet<()>, grace: Duration) {
    while let Some(done) = tasks.try_join_next() {
        log_join(done);
    }
    if tasks.is_empty() {
        return;
    }
    tracing::info!(
        runs = tasks.len(),
        grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        "waiting for runs in flight"
    );
    if join_all_within(&mut tasks, grace).await {
        return;
    }
    let left = shared.registry.all();
    tracing::warn!(
        runs = left.len(),
        "grace period over; killing the runs in flight"
    );
    for (_, control) in &left {
        if let StopAction::Signal(pgid) = control.stop(StopReason::Shutdown) {
            process::kill_group(pgid);
        }
    }
    if join_all_within(&mut tasks, FINALIZE_TIMEOUT).await {
        return;
    }
    tasks.abort_all();
    while let Some(done) = tasks.join_next().await {
        log_join(done);
    }
    for (id, _) in shared.registry.all() {
        run::fail_for_shutdown(shared, &id).await;
        shared.registry.remove(&id);
    }
}

async fn join_all_within(tasks: &mut JoinSet<()>, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        tokio::select! {
            done = tasks.join_next() => match done {
                Some(d) => log_join(d),
                None => return true,
            },
            () = tokio::time::sleep_until(deadline) => return false,
        }
    }
}

fn log_join(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!(error = %e, "a run task panicked");
    }
}

/// Stores this engine's config under `key`, refusing (with both names) when a *different*
/// engine already holds the key: `1.0` and `1_0` are one subject token and one key, and a
/// second spelling would take over the first one's queue and config. Compare-and-set, so two
/// colliding engines starting at once cannot both pass.
async fn register_config(
    infra: &Infra,
    spec: &common::EngineSpec,
    key: &str,
    value: Bytes,
) -> Result<(), EngineError> {
    use async_nats::jetstream::kv::Operation;
    for _ in 0..10 {
        let entry = infra
            .engine_configs
            .entry(key)
            .await
            .map_err(|e| EngineError::nats("read the registered engine config", e))?
            .filter(|e| e.operation == Operation::Put);
        let written = match entry {
            None => infra
                .engine_configs
                .create(key, value.clone())
                .await
                .map_err(|e| e.to_string()),
            Some(entry) => {
                if let Ok(other) = serde_json::from_slice::<common::EngineSpec>(&entry.value)
                    && (other.name != spec.name || other.version != spec.version)
                {
                    return Err(EngineError::Collision(format!(
                        "engine {} {} collides with the registered engine {} {}: both become the NATS key and subject token '{key}'; choose another name or version (or remove the old one: `nats kv del metis_engine_configs {key}`)",
                        spec.name, spec.version, other.name, other.version
                    )));
                }
                infra
                    .engine_configs
                    .update(key, value.clone(), entry.revision)
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        match written {
            Ok(_) => return Ok(()),
            // Someone wrote it meanwhile: look again.
            Err(e) => {
                tracing::debug!(error = %e, "the engine config changed while registering; reading it again")
            }
        }
    }
    Err(EngineError::nats(
        "register the engine config",
        "it kept changing while this engine registered",
    ))
}

#[cfg(test)]
mod startup_tests {
    use super::*;

    #[tokio::test]
    async fn transient_start_up_errors_are_retried_and_others_are_not() {
        let mut calls = 0;
        let ok = startup_retry("write", || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err("ack error: no stream found for given subject".to_owned())
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(ok, Ok(3));

        let mut calls = 0;
        let refused: Result<(), String> = startup_retry("write", || {
            calls += 1;
            async { Err("engine generic 1 collides with the registered engine".to_owned()) }
        })
        .await;
        assert!(refused.is_err());
        assert_eq!(calls, 1, "a refusal that will not pass is not retried");
    }
}
