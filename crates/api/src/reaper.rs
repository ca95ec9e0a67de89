//! The reaper and reconciler: every run that got a 200 reaches a terminal state, whatever
//! crashed.
//!
//! Every `REAPER_INTERVAL_MS` one pass looks at the runs in the active index
//! (`metis.active.<run_id>`, see `common::infra`) — never at finished history — and repairs
//! what nobody else will:
//!
//! | the record says | and | the pass does | span |
//! | --- | --- | --- | --- |
//! | QUEUED | no message waits for it in `METIS_RUNS`, two passes in a row (the API died between storing and publishing, a publish failed, a message was lost) | publishes it again | `redispatch_run` → `publish …` |
//! | INITIALIZING, RUNNING, CANCELING | its engine's registration is gone, or has not changed for `ENGINE_TTL_MS` | SYSTEM_ERROR `engine … stopped sending heartbeats` (CANCELING: CANCELED) | `reap_run` |
//! | INITIALIZING, RUNNING, CANCELING | its engine is alive but a heartbeat newer than the record's last change does not list the run (a lost claim, a forgotten run) | SYSTEM_ERROR `engine … does not know the run` (CANCELING: CANCELED) | `reap_run` |
//! | a terminal state | it is still indexed (the indexing after the final write failed) | counts and unindexes it | — |
//! | nothing (no record) | two passes in a row (the API died between indexing and storing) | unindexes it | — |
//!
//! Liveness is judged without comparing clocks: the pass remembers each registration's
//! revision and when (on its own monotonic clock) it last changed. Time during which the API
//! itself could not reach NATS does not count: after a gap of more than half the TTL between
//! successful passes, every engine gets a fresh TTL (an engine cut off by the same outage is
//! not reaped for it). Every change is a
//! compare-and-set, so an engine that finishes a run at the same moment keeps its real result,
//! and several API replicas may run passes side by side.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use common::infra::Decision;
use common::{EngineRegistration, RunId, RunRecord, State};
use futures::StreamExt;
use telemetry::tracing::{self, Instrument, debug, info, warn};
use tokio::sync::watch;

use crate::AppState;

/// Runs until `stop` turns true.
pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(state.config.reaper_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut memory = Memory::default();
    let mut last_ok: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if last_ok.is_some_and(|t| t.elapsed() > state.config.engine_ttl / 2) {
                    memory.engines.clear();
                }
                match pass(&state, &mut memory).await {
                    Ok(()) => last_ok = Some(Instant::now()),
                    Err(e) => debug!(error = %e, "reaper pass failed; retrying next interval"),
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// What one pass learns for the next.
#[derive(Default)]
struct Memory {
    /// Engine id → (registration revision, when this API first saw that revision).
    engines: HashMap<String, (u64, Instant)>,
    /// QUEUED runs seen without a message in the last pass.
    undispatched: HashSet<RunId>,
    /// Indexed runs seen without a record in the last pass.
    missing: HashSet<RunId>,
}

/// One engine as the pass sees it.
enum Liveness {
    /// Heartbeating; its registration as last written.
    Alive(Box<EngineRegistration>),
    /// Gone (why).
    Gone(String),
}

async fn engines(
    state: &AppState,
    memory: &mut Memory,
) -> Result<HashMap<String, Liveness>, String> {
    let mut keys = state
        .infra
        .engines
        .keys()
        .await
        .map_err(|e| e.to_string())?;
    let now = Instant::now();
    let ttl = state.config.engine_ttl;
    let mut out = HashMap::new();
    let mut seen = HashSet::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| e.to_string())?;
        let Some(entry) = state
            .infra
            .engines
            .entry(&key)
            .await
            .map_err(|e| e.to_string())?
        else {
            continue;
        };
        let Ok(reg) = serde_json::from_slice::<EngineRegistration>(&entry.value) else {
            continue;
        };
        let id = reg.id.clone();
        seen.insert(id.clone());
        let since = match memory.engines.get(&id) {
            Some((rev, since)) if *rev == entry.revision => *since,
            _ => now,
        };
        memory.engines.insert(id.clone(), (entry.revision, since));
        let quiet = now.duration_since(since);
        let liveness = if quiet > ttl {
            Liveness::Gone(format!(
                "engine {id} stopped sending heartbeats (none for longer than ENGINE_TTL_MS={})",
                ttl.as_millis()
            ))
        } else {
            Liveness::Alive(Box::new(reg))
        };
        out.insert(id, liveness);
    }
    memory.engines.retain(|id, _| seen.contains(id));
    Ok(out)
}

async fn pass(state: &AppState, memory: &mut Memory) -> Result<(), common::infra::InfraError> {
    let ids = state.infra.active_runs().await?;
    if ids.is_empty() {
        memory.undispatched.clear();
        memory.missing.clear();
        return Ok(());
    }
    let engines = match engines(state, memory).await {
        Ok(e) => Some(e),
        // Not knowing is not "gone": never fail a run on a failed lookup.
        Err(e) => {
            debug!(error = %e, "listing engine registrations failed; only queued runs are looked at this pass");
            None
        }
    };
    let mut undispatched = HashSet::new();
    let mut missing = HashSet::new();
    for id in ids {
        let Some((rec, _)) = state.infra.get_run(&id).await? else {
            if memory.missing.contains(&id) {
                state.infra.forget_active(&id).await?;
            } else {
                missing.insert(id);
            }
            continue;
        };
        match rec.state {
            s if s.is_terminal() => state.infra.finished(&id, s).await?,
            State::Queued => {
                let Some(subject) = rec.subject.as_deref() else {
                    continue;
                };
                if state.infra.has_run_message(subject).await? {
                    continue;
                }
                if memory.undispatched.contains(&id) {
                    redispatch(state, &rec).await;
                } else {
                    undispatched.insert(id);
                }
            }
            State::Initializing | State::Running | State::Canceling => {
                if let Some(engines) = &engines
                    && let Some(reason) = abandoned(&rec, engines)
                {
                    reap(state, &rec, reason).await?;
                }
            }
            _ => {}
        }
    }
    memory.undispatched = undispatched;
    memory.missing = missing;
    Ok(())
}

/// Why nobody runs this in-flight run any more, if so.
fn abandoned(rec: &RunRecord, engines: &HashMap<String, Liveness>) -> Option<String> {
    let engine_id = rec.engine_id.as_deref()?;
    match engines.get(engine_id) {
        None => Some(format!("engine {engine_id} stopped sending heartbeats")),
        Some(Liveness::Gone(why)) => Some(why.clone()),
        Some(Liveness::Alive(reg)) => (reg.heartbeat_at > rec.updated_at
            && !reg.runs.contains(&rec.run_id))
        .then(|| {
            format!("engine {engine_id} does not know the run (it is not among the runs its heartbeat lists)")
        }),
    }
}

/// Ends an abandoned run: SYSTEM_ERROR, or CANCELED when a cancel was already asked for.
async fn reap(
    state: &AppState,
    rec: &RunRecord,
    reason: String,
) -> Result<(), common::infra::InfraError> {
    let engine_id = rec.engine_id.clone().unwrap_or_default();
    let span = tracing::info_span!(
        "reap_run",
        run_id = %rec.run_id,
        engine_id = %engine_id,
        state = tracing::field::Empty,
        reason = %reason,
    );
    async {
        let ended = state
            .infra
            .update_run(&rec.run_id, |r| match r {
                Some(r)
                    if matches!(
                        r.state,
                        State::Initializing | State::Running | State::Canceling
                    ) && r.engine_id.as_deref() == Some(engine_id.as_str())
                        && r.updated_at == rec.updated_at =>
                {
                    if r.state == State::Canceling {
                        r.state = State::Canceled;
                    } else {
                        r.state = State::SystemError;
                        r.error = Some(reason.clone());
                    }
                    Decision::Write(Some(r.state))
                }
                _ => Decision::Keep(None),
            })
            .await?;
        match ended {
            Some(s) => {
                tracing::Span::current().record("state", s.as_str());
                warn!(state = %s, "run abandoned by its engine; ended by the reaper");
            }
            None => info!("run changed meanwhile; left as it is"),
        }
        Ok(())
    }
    .instrument(span)
    .await
}

/// Publishes a QUEUED run's message again, in a trace of its own that the engine's
/// `workflow_run` joins.
async fn redispatch(state: &AppState, rec: &RunRecord) {
    let span = tracing::info_span!("redispatch_run", run_id = %rec.run_id, user_id = %rec.user_id, error = tracing::field::Empty);
    async {
        let prefix = rec
            .subject
            .as_deref()
            .and_then(|s| s.rsplit_once('.'))
            .map_or_else(String::new, |(p, _)| p.to_owned());
        // A fresh de-duplication id: the first one may still be in the window.
        let msg_id = format!("{}/redispatch/{}", rec.run_id, uuid::Uuid::now_v7());
        match crate::service::dispatch(state, rec, &prefix, &msg_id).await {
            Ok(()) => info!("queued run had no message; dispatched again"),
            Err(e) => {
                tracing::Span::current().record("error", e.as_str());
                warn!(error = %e, "dispatching the queued run again failed; retrying next pass");
            }
        }
    }
    .instrument(span)
    .await;
}
