//! Fails runs whose engine vanished.
//!
//! Engines keep a registration in the `metis_engines` bucket alive with heartbeats; the bucket
//! expires entries that stop being refreshed. Every `REAPER_INTERVAL_MS` this task looks at runs
//! in INITIALIZING, RUNNING or CANCELING and moves those whose `engine_id` has no registration
//! to SYSTEM_ERROR (compare-and-set, so a run that just finished keeps its real state).

use std::collections::HashMap;

use common::State;
use common::infra::Decision;
use telemetry::tracing::{debug, warn};
use tokio::sync::watch;

use crate::AppState;

/// Runs until `stop` turns true.
pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(state.config.reaper_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = pass(&state).await {
                    debug!(error = %e, "reaper pass failed; retrying next interval");
                }
            }
            _ = stop.changed() => return,
        }
    }
}

async fn pass(state: &AppState) -> Result<(), common::infra::InfraError> {
    let mut alive: HashMap<String, bool> = HashMap::new();
    for rec in crate::routes::decoded_runs(state).await? {
        if !matches!(
            rec.state,
            State::Initializing | State::Running | State::Canceling
        ) {
            continue;
        }
        let Some(engine_id) = rec.engine_id.clone() else {
            continue;
        };
        let is_alive = match alive.get(&engine_id) {
            Some(v) => *v,
            None => {
                let key = common::nats::token(&engine_id);
                let v = match state.infra.engines.get(&key).await {
                    Ok(found) => found.is_some(),
                    // Not knowing is not "gone": never fail a run on a failed lookup.
                    Err(e) => {
                        debug!(engine_id = %engine_id, error = %e, "engine lookup failed; skipping its runs this pass");
                        true
                    }
                };
                alive.insert(engine_id.clone(), v);
                v
            }
        };
        if is_alive {
            continue;
        }
        let reason = format!("engine {engine_id} stopped sending heartbeats");
        let changed = state
            .infra
            .update_run(&rec.run_id, |r| match r {
                Some(r)
                    if matches!(
                        r.state,
                        State::Initializing | State::Running | State::Canceling
                    ) && r.engine_id.as_deref() == Some(engine_id.as_str()) =>
                {
                    r.state = State::SystemError;
                    r.error = Some(reason.clone());
                    Decision::Write(true)
                }
                _ => Decision::Keep(false),
            })
            .await?;
        if changed {
            warn!(run_id = %rec.run_id, engine_id = %engine_id, "engine vanished; run marked SYSTEM_ERROR");
        }
    }
    Ok(())
}
