//! The reaper and reconciler: every run that got a 200 reaches a terminal state, whatever
//! crashed.
//!
//! Every `REAPER_INTERVAL_MS` one pass looks at the runs in the active index
//! (`metis.active.<user>.<run_id>`, see `common::infra`) — never at finished history — and repairs
//! what nobody else will:
//!
//! | the record says | and | the pass does | span |
//! | --- | --- | --- | --- |
//! | QUEUED | no message waits for it in `METIS_RUNS`, two passes in a row (the API died between storing and publishing, a publish failed, a message was lost), and this API is not creating it right now (a large publish can outlast two passes) | publishes it again | `redispatch_run` → `publish …` |
//! | INITIALIZING, RUNNING, CANCELING | its engine's registration is gone, or has not changed for `ENGINE_TTL_MS` (a clock this API restarts after each of its reconnects and moves on by the length of a slow read: time it could not see NATS does not count) | SYSTEM_ERROR `engine … stopped sending heartbeats` (CANCELING: CANCELED) | `reap_run` |
//! | INITIALIZING, RUNNING, CANCELING | its engine is alive but two heartbeats written after the record was read do not list the run (a lost claim, a forgotten run) | SYSTEM_ERROR `engine … does not know the run` (CANCELING: CANCELED) | `reap_run` |
//! | a terminal state | it is still indexed (the indexing after the final write failed) | counts and unindexes it | — |
//! | nothing (no record) | two passes in a row, and the run id is more than 5 minutes old (the API died between indexing and storing) | unindexes it | — |
//!
//! Liveness is judged without comparing clocks: each engine's registration is read directly
//! (a bucket listing can miss a key updated while it runs), and the pass remembers its
//! revision and when (on its own monotonic clock) it last changed. Time during which the API
//! itself could not reach NATS does not count: after a gap of more than half the TTL between
//! successful passes, every engine gets a fresh TTL (an engine cut off by the same outage is
//! not reaped for it). Every change is a
//! compare-and-set, so an engine that finishes a run at the same moment keeps its real result,
//! and several API replicas may run passes side by side.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::infra::Decision;
use common::{EngineRegistration, RunId, RunRecord, State};
use telemetry::tracing::{self, Instrument, debug, info, warn};
use tokio::sync::watch;

use crate::AppState;

/// Runs until `stop` turns true.
pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(state.config.reaper_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut memory = Memory::default();
    let mut last_ok: Option<Instant> = None;
    let mut sweep: Option<tokio::task::JoinHandle<()>> = None;
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
                // In a task of its own (one at a time): a long sweep never delays a pass.
                if sweep.as_ref().is_none_or(tokio::task::JoinHandle::is_finished) {
                    let state = state.clone();
                    sweep = Some(tokio::spawn(async move {
                        if let Err(e) = crate::retention::sweep(&state).await {
                            debug!(error = %e, "retention sweep failed; retrying next interval");
                        }
                    }));
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// What one pass learns for the next.
#[derive(Default)]
struct Memory {
    /// Engine id → (registration revision, when this API first saw that revision, the
    /// NATS connection count then).
    engines: HashMap<String, (u64, Instant, u64)>,
    /// QUEUED runs seen without a message in the last pass.
    undispatched: HashSet<RunId>,
    /// Indexed runs seen without a record in the last pass.
    missing: HashSet<RunId>,
    /// In-flight runs their live engine's registration did not list: (record revision, last
    /// registration revision seen, how many newer registrations have left it out since).
    unlisted: HashMap<RunId, (u64, u64, u32)>,
}

/// How many heartbeats written after a run was first seen unlisted must also leave it out
/// before the run counts as forgotten (one could predate the claim being read).
const UNLISTED_HEARTBEATS: u32 = 2;

/// How old an index entry without a record must be before it is dropped (a create that is
/// merely slow must not lose its index entry).
const MISSING_RECORD_AGE: Duration = Duration::from_secs(300);

/// One engine as the pass sees it.
enum Liveness {
    /// Heartbeating; its registration as last written, and that write's revision.
    Alive(Box<EngineRegistration>, u64),
    /// Gone (why).
    Gone(String),
}

/// The liveness of `engine_id`, read directly (not from a listing, which can miss a key
/// updated while it runs). `Err` when NATS could not say: never a reason to reap.
async fn liveness(
    state: &AppState,
    memory: &mut Memory,
    engine_id: &str,
) -> Result<Liveness, String> {
    let asked = Instant::now();
    let entry = state
        .infra
        .engines
        .entry(common::nats::token(engine_id))
        .await
        .map_err(|e| e.to_string())?;
    let Some(entry) = entry.filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put)
    else {
        return Ok(Liveness::Gone(format!(
            "engine {engine_id} stopped sending heartbeats (its registration is gone)"
        )));
    };
    let reg = serde_json::from_slice::<EngineRegistration>(&entry.value)
        .map_err(|e| format!("registration of {engine_id} does not decode: {e}"))?;
    let now = Instant::now();
    let ttl = state.config.engine_ttl;
    // Time this API may have been unable to see a newer registration does not count: the
    // clock restarts after a reconnect (nobody could heartbeat while NATS was away, and the
    // engine reconnects after us), and a read that took long (NATS frozen, an election: the
    // heartbeat may be stuck behind it) moves the clock on by its duration.
    let connects = state
        .client
        .statistics()
        .connects
        .load(std::sync::atomic::Ordering::Relaxed);
    let read = now.duration_since(asked);
    let since = match memory.engines.get(engine_id) {
        // A slow read: the stall does not count (the clock moves on by that much), the time
        // before it does, so an engine that is really gone is still reaped.
        Some((rev, since, c)) if *rev == entry.revision && *c == connects && read >= ttl / 4 => {
            (*since + read).min(now)
        }
        Some((rev, since, c)) if *rev == entry.revision && *c == connects => *since,
        _ => now,
    };
    memory
        .engines
        .insert(engine_id.to_owned(), (entry.revision, since, connects));
    if now.duration_since(since) > ttl {
        return Ok(Liveness::Gone(format!(
            "engine {engine_id} stopped sending heartbeats (none for longer than ENGINE_TTL_MS={})",
            ttl.as_millis()
        )));
    }
    Ok(Liveness::Alive(Box::new(reg), entry.revision))
}

/// One pass. `Err` only when the active index cannot be listed (NATS unreachable); a problem
/// with one run is logged and the pass goes on with the next.
async fn pass(state: &AppState, memory: &mut Memory) -> Result<(), common::infra::InfraError> {
    let asked = Instant::now();
    let ids = state.infra.active_runs().await?;
    let listing = asked.elapsed();
    if listing > state.config.engine_ttl / 4 {
        // The listing waited out an outage: its duration does not count against any engine.
        for (_, since, _) in memory.engines.values_mut() {
            *since += listing;
        }
    }
    let mut undispatched = HashSet::new();
    let mut missing = HashSet::new();
    let mut unlisted = HashMap::new();
    let mut engines: HashMap<String, Liveness> = HashMap::new();
    let mut looked_up = HashSet::new();
    let mut counts = std::collections::BTreeMap::new();
    for id in ids {
        match look_at(
            state,
            memory,
            &id,
            (&mut undispatched, &mut missing, &mut unlisted),
            (&mut engines, &mut looked_up),
        )
        .await
        {
            Ok(Some(s)) if !s.is_terminal() => *counts.entry(s.to_string()).or_default() += 1,
            Ok(_) => {}
            Err(e) => {
                debug!(run_id = %id, error = %e, "reaper: could not look at a run; next pass");
            }
        }
    }
    state.active_counts.set(counts);
    memory.engines.retain(|id, _| looked_up.contains(id));
    memory.undispatched = undispatched;
    memory.missing = missing;
    memory.unlisted = unlisted;
    Ok(())
}

/// Run → (record revision, last heartbeat revision seen, newer heartbeats without it).
type Unlisted = HashMap<RunId, (u64, u64, u32)>;
type Next<'a> = (
    &'a mut HashSet<RunId>,
    &'a mut HashSet<RunId>,
    &'a mut Unlisted,
);
type Engines<'a> = (&'a mut HashMap<String, Liveness>, &'a mut HashSet<String>);

/// Reads one run's record and repairs what needs it; returns the state the record had.
async fn look_at(
    state: &AppState,
    memory: &mut Memory,
    id: &RunId,
    (undispatched, missing, unlisted): Next<'_>,
    engines: Engines<'_>,
) -> Result<Option<State>, String> {
    let Some((rec, revision)) = state.infra.get_run(id).await.map_err(|e| e.to_string())? else {
        if memory.missing.contains(id) && crate::retention::older_than(id, MISSING_RECORD_AGE) {
            state
                .infra
                .forget_active(id)
                .await
                .map_err(|e| e.to_string())?;
        } else {
            missing.insert(*id);
        }
        return Ok(None);
    };
    let seen = rec.state;
    repair(
        state,
        memory,
        id,
        (&rec, revision),
        (undispatched, unlisted),
        engines,
    )
    .await?;
    Ok(Some(seen))
}

async fn repair(
    state: &AppState,
    memory: &mut Memory,
    id: &RunId,
    (rec, revision): (&RunRecord, u64),
    (undispatched, unlisted): (&mut HashSet<RunId>, &mut Unlisted),
    (engines, looked_up): Engines<'_>,
) -> Result<(), String> {
    match rec.state {
        s if s.is_terminal() => state
            .infra
            .finished(id, &rec.user_id, s)
            .await
            .map_err(|e| e.to_string())?,
        State::Queued => {
            let Some(subject) = rec.subject.as_deref() else {
                return Ok(());
            };
            if state.dispatching.contains(id) {
                // Still being created here: its publish has not been acked yet.
                return Ok(());
            }
            if state
                .infra
                .has_run_message(subject)
                .await
                .map_err(|e| e.to_string())?
            {
                return Ok(());
            }
            if memory.undispatched.contains(id) {
                redispatch(state, rec).await;
            } else {
                undispatched.insert(*id);
            }
        }
        State::Initializing | State::Running | State::Canceling => {
            let Some(engine_id) = rec.engine_id.clone() else {
                return Ok(());
            };
            if looked_up.insert(engine_id.clone()) {
                let l = liveness(state, memory, &engine_id).await?;
                engines.insert(engine_id.clone(), l);
            }
            let reason = match engines.get(&engine_id) {
                Some(Liveness::Gone(why)) => Some(why.clone()),
                Some(Liveness::Alive(reg, reg_rev)) if !reg.runs.contains(id) => {
                    // Forgotten only when heartbeats written after this record was read
                    // keep leaving it out: no clocks are compared.
                    let (seen, newer) = match memory.unlisted.get(id) {
                        Some((rec_rev, last, n)) if *rec_rev == revision => {
                            (*last, n + u32::from(*reg_rev > *last))
                        }
                        _ => (*reg_rev, 0),
                    };
                    unlisted.insert(*id, (revision, seen.max(*reg_rev), newer));
                    (newer >= UNLISTED_HEARTBEATS).then(|| {
                        format!("engine {engine_id} does not know the run (its heartbeats do not list it)")
                    })
                }
                _ => None,
            };
            if let Some(reason) = reason {
                unlisted.remove(id);
                reap(state, rec, reason).await.map_err(|e| e.to_string())?;
            }
        }
        _ => {}
    }
    Ok(())
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
            .and_then(common::nats::run_prefix_of_subject)
            .unwrap_or_default()
            .to_owned();
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
