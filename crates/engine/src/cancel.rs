//! Cancel requests on `metis.cancel.<engine_id>` (core NATS).
//!
//! The API sets the record to CANCELING, then sends [`common::CancelMessage`] with a
//! `traceparent` header. Each message gets a `workflow_cancel` span, a child of the API's
//! context, that ends as soon as the request is carried out (the SIGKILL escalation after the
//! grace period runs in the background, outside it):
//!
//! Nothing is done on the message's word alone: the run's record must say CANCELING and name
//! this engine (the API sets it before it sends), otherwise the message is logged and dropped —
//! a forged `{"run_id"}` on the subject cancels nothing.
//!
//! - run in flight here with a live process → SIGTERM to its process group, SIGKILL after
//!   `runs.cancelGracePeriodMs`; the run task then records CANCELED;
//! - run in flight here without a process yet → the stop flag makes the run task skip the
//!   spawn (or kill what it just spawned) and record CANCELED;
//! - run not in flight here, record CANCELING and owned by this engine → CANCELED at once;
//! - anything else → INFO "run is not running on this engine".
//!
//! The heartbeat also [`sweep`]s the runs in flight: one whose record says CANCELING in two
//! sweeps in a row is stopped even though its cancel message was lost, and one whose record is
//! already terminal or names another engine (the API's reaper gave up on this instance, e.g.
//! while it was paused past its TTL) has its process group killed at once; its result is then
//! not written, so the terminal state the record has is never overwritten.

use std::sync::Arc;

use common::infra::Decision;
use common::{CancelMessage, RunId, State};
use futures::StreamExt;
use tracing::Instrument;

use crate::control::StopAction;
use crate::outcome::StopReason;
use crate::process;
use crate::runtime::Shared;

/// Serves cancel messages until the subscription ends.
pub async fn listen(shared: Arc<Shared>, mut sub: async_nats::Subscriber) {
    while let Some(msg) = sub.next().await {
        handle(&shared, msg).await;
    }
}

async fn handle(shared: &Shared, msg: async_nats::Message) {
    let cancel: CancelMessage = match serde_json::from_slice(&msg.payload) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(subject = %msg.subject, reason = %e, "discarding malformed cancel message");
            return;
        }
    };
    let span = workflow_cancel_span(&cancel.run_id, msg.headers.as_ref());
    cancel_run(shared, cancel.run_id).instrument(span).await;
}

/// The `workflow_cancel` span: a child of the context in `headers` (the API's cancel
/// producer span), parent set before the span is first entered.
pub fn workflow_cancel_span(
    run_id: &RunId,
    headers: Option<&async_nats::HeaderMap>,
) -> tracing::Span {
    let span = tracing::info_span!("workflow_cancel", otel.kind = "consumer", run_id = %run_id);
    telemetry::propagation::set_parent_from(&span, headers);
    span
}

async fn cancel_run(shared: &Shared, id: RunId) {
    if let Some(control) = shared.registry.get(&id) {
        // A cancel message is only a nudge: anyone who can publish on NATS could send one.
        // The record is the authority — the API marks it CANCELING, for this engine, first.
        let me = shared.engine_id.as_str();
        match shared.infra.get_run(&id).await {
            Ok(Some((rec, _)))
                if rec.state == State::Canceling && rec.engine_id.as_deref() == Some(me) => {}
            Ok(Some((rec, _))) => {
                tracing::warn!(
                    state = %rec.state,
                    owner = rec.engine_id.as_deref().unwrap_or("nobody"),
                    "ignoring a cancel message: the run's record does not say CANCELING for this engine"
                );
                return;
            }
            Ok(None) => {
                tracing::warn!("ignoring a cancel message: the run has no record");
                return;
            }
            Err(e) => {
                // The sweep stops a run whose record says CANCELING even without a message.
                tracing::warn!(error = %e, "ignoring a cancel message: the run's record cannot be read");
                return;
            }
        }
        match control.stop(StopReason::Cancel) {
            StopAction::Signal(pgid) => {
                process::terminate_group(pgid, shared.cancel_grace, control);
                tracing::info!("sent SIGTERM to the run's process group");
            }
            StopAction::NotStarted => tracing::info!("run has no process yet; it will not start"),
            StopAction::Exited => tracing::info!("run's process has already exited"),
        }
        return;
    }
    let me = shared.engine_id.as_str();
    let result = shared
        .infra
        .update_run(&id, |rec| match rec {
            Some(r) if r.state == State::Canceling && r.engine_id.as_deref() == Some(me) => {
                r.state = State::Canceled;
                Decision::Write(true)
            }
            _ => Decision::Keep(false),
        })
        .await;
    match result {
        Ok(true) => tracing::info!("run was not in flight here; marked canceled"),
        Ok(false) => tracing::info!("run is not running on this engine"),
        Err(e) => tracing::warn!(error = %e, "failed to read the run record"),
    }
}

/// Stops every run in flight whose record says CANCELING in two sweeps in a row while no
/// cancel message arrived (a lost message).
pub async fn sweep(shared: &Shared) {
    for (id, control) in shared.registry.all() {
        if control.stop_reason().is_some() || control.live_group().is_none() {
            continue;
        }
        let me = shared.engine_id.as_str();
        match shared.infra.get_run(&id).await {
            Ok(Some((rec, _)))
                if rec.state.is_terminal() || rec.engine_id.as_deref().is_some_and(|e| e != me) =>
            {
                let why = format!(
                    "the run was ended while in flight here (the record says {} by {})",
                    rec.state,
                    rec.engine_id.as_deref().unwrap_or("nobody")
                );
                tracing::warn!(run_id = %id, state = %rec.state, "run was ended elsewhere; killing its process");
                if let StopAction::Signal(pgid) = control.stop(StopReason::Abort(why)) {
                    process::kill_group(pgid);
                }
            }
            Ok(Some((rec, _))) if rec.state == State::Canceling => {
                if !control.canceling_seen_again() {
                    continue;
                }
                tracing::info!(run_id = %id, "run is canceling but no cancel message came; stopping the process");
                if let StopAction::Signal(pgid) = control.stop(StopReason::Cancel) {
                    process::terminate_group(pgid, shared.cancel_grace, control);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(run_id = %id, error = %e, "checking for a cancel failed"),
        }
    }
}
