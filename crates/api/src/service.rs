//! The traced operations behind `POST /runs` and `POST /runs/{run_id}/cancel`.
//!
//! Spans (the telemetry contract the snapshots pin):
//! - `create_run` {run_id, user_id, workflow_type, workflow_engine} with the event
//!   "Run created and dispatched", and under it a producer span `publish <subject>`
//!   (messaging.system=nats, messaging.destination.name) whose context travels in the message's
//!   `traceparent` header. The message's `trace_id` is the OTel span id of `create_run`.
//! - `request_cancel` {run_id} with an event saying what happened, and for a running run a
//!   producer span `publish metis.cancel.<engine_id>`.
//!
//! Validation happens before anything is stored or published, and so does the size check: a
//! run whose record would not fit the NATS server's `max_payload` (less the room kept for
//! what the engine adds) is a 413 naming both numbers.
//!
//! The work after validation runs in a task of its own ([`create_run`] spawns it), so a
//! client that hangs up cannot cut it between storing the record and publishing the message.
//! Whatever still strands a QUEUED run (the API killed in between, a failed publish) is the
//! reconciler's to repair ([`crate::reaper`]), by [`dispatch`]ing the run again — so a run
//! whose publish failed after it was stored is still accepted (200): its message may have
//! landed with only the ack lost, and failing it then could run it while the client retries.

use async_nats::HeaderMap;
use bytes::Bytes;
use common::infra::Decision;
use common::nats::{cancel_subject, engine_config_key, run_message_subject, run_subject};
use common::{CancelMessage, EngineSpec, RunId, RunRecord, RunRequest, RunRequestMessage, State};
use telemetry::tracing::{self, Instrument, Span, field, info, warn};

use crate::AppState;
use crate::error::ApiError;

/// Looks up the engine config a request names.
async fn engine_spec(state: &AppState, req: &RunRequest) -> Result<EngineSpec, ApiError> {
    for (field, v) in [
        ("workflow_engine", &req.workflow_engine),
        ("workflow_engine_version", &req.workflow_engine_version),
    ] {
        if v.trim().is_empty() {
            return Err(ApiError::bad_request(format!("{field}: must not be empty")));
        }
    }
    // Only names an engine could have reach the bucket (other characters are not valid keys).
    if common::nats::is_engine_name(&req.workflow_engine)
        && common::nats::is_engine_version(&req.workflow_engine_version)
    {
        let key = engine_config_key(&req.workflow_engine, &req.workflow_engine_version);
        if let Some(spec) = state.configs.get(&key)
            && spec.name == req.workflow_engine
            && spec.version == req.workflow_engine_version
        {
            return Ok(spec);
        }
        if let Some(bytes) = engine_config(state, &key).await? {
            let spec: EngineSpec = serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::unavailable(format!("engine config {key} is corrupt: {e}"))
            })?;
            // The key folds `.` into `_`; the version must match as written.
            if spec.name == req.workflow_engine && spec.version == req.workflow_engine_version {
                return Ok(spec);
            }
        }
    }
    let known = registered_engines(state).await?;
    let list = if known.is_empty() {
        "no engine has registered yet".to_owned()
    } else {
        format!(
            "registered: {}",
            known
                .iter()
                .map(|s| format!("{} {}", s.name, s.version))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Err(ApiError::bad_request(format!(
        "workflow_engine: unknown engine '{}' version '{}' ({list})",
        req.workflow_engine, req.workflow_engine_version
    )))
}

/// The engine config stored under `key`, read like every other read: a leader change or a
/// lost server is waited out, not answered 503 at the first timeout (seen in
/// `cluster_partitioned_node`: a cache miss right after the API's server was cut off).
async fn engine_config(state: &AppState, key: &str) -> Result<Option<bytes::Bytes>, ApiError> {
    Ok(
        common::infra::read_during_failover("reading an engine config", || async {
            state.infra.engine_configs.get(key).await.map_err(|e| {
                common::infra::InfraError::new(format!("reading engine config {key}"), e)
            })
        })
        .await?,
    )
}

/// Every engine config registered in `metis_engine_configs`.
pub async fn registered_engines(state: &AppState) -> Result<Vec<EngineSpec>, ApiError> {
    let keys = state
        .infra
        .bucket_keys(&state.infra.engine_configs)
        .await
        .map_err(ApiError::unavailable)?;
    let mut out = Vec::new();
    for key in keys {
        if let Some(bytes) = engine_config(state, &key).await? {
            match serde_json::from_slice::<EngineSpec>(&bytes) {
                Ok(spec) => out.push(spec),
                Err(e) => {
                    warn!(key = %key, error = %e, "skipping an engine config that does not decode")
                }
            }
        }
    }
    out.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    Ok(out)
}

/// Validates, stores and dispatches a run.
#[tracing::instrument(
    name = "create_run",
    skip_all,
    fields(run_id = field::Empty, user_id = %user_id, workflow_type = %req.workflow_type, workflow_engine = %req.workflow_engine, error = field::Empty)
)]
pub async fn create_run(
    state: &AppState,
    user_id: String,
    req: RunRequest,
) -> Result<RunId, ApiError> {
    let task = tokio::spawn(
        {
            let state = state.clone();
            async move { create_run_inner(&state, user_id, req).await }
        }
        .in_current_span(),
    );
    let result = match task.await {
        Ok(r) => r,
        Err(e) => Err(ApiError::unavailable(format!(
            "creating the run failed: {e}"
        ))),
    };
    record_error(result)
}

/// Records a failure's message as the current span's `error` field.
fn record_error<T>(result: Result<T, ApiError>) -> Result<T, ApiError> {
    if let Err(e) = &result {
        Span::current().record("error", e.msg.as_str());
    }
    result
}

/// The `Retry-After` of a 429 for the unfinished-runs quota: a hint, runs take their time.
pub const QUOTA_RETRY_AFTER_S: u64 = 10;

async fn create_run_inner(
    state: &AppState,
    user_id: String,
    req: RunRequest,
) -> Result<RunId, ApiError> {
    let spec = engine_spec(state, &req).await?;
    let validated = common::validate::validate(&req, &spec)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let run_id = RunId::new();
    let prefix = run_subject(
        &spec.name,
        &spec.version,
        &validated.workflow_type,
        &validated.workflow_type_version,
    );
    let subject = run_message_subject(&prefix, &user_id, &run_id);
    let mut record = RunRecord::queued(run_id, user_id.clone(), req.clone());
    record.subject = Some(subject.clone());
    check_size(state, &record)?;
    // The quota check and the index entry it counts are one step for this user.
    let quota_guard = state.quota_locks.lock(&user_id).await;
    let limit = state.config.max_unfinished_per_user;
    let mut unfinished = state.infra.unfinished_runs_of(&user_id).await?;
    if unfinished.len() as u64 >= limit {
        // Before refusing (and only then), leave out runs that ended a moment ago and are not
        // unindexed yet: at most `limit` reads.
        let mut still = Vec::new();
        for id in unfinished {
            match state.infra.get_run(&id).await? {
                Some((r, _)) if r.state.is_terminal() => {
                    let _ = state.infra.finished(&id, &r.user_id, r.state).await;
                }
                // Being created (its index entry comes first), or not yet cleaned up.
                None | Some(_) => still.push(id),
            }
        }
        unfinished = still;
    }
    let unfinished = unfinished.len() as u64;
    if unfinished >= limit {
        return Err(ApiError::too_many(
            format!(
                "user {user_id} has {unfinished} unfinished runs, the most MAX_UNFINISHED_RUNS_PER_USER allows ({limit}); wait for some to finish or cancel some"
            ),
            crate::error::Quota {
                limit_name: "MAX_UNFINISHED_RUNS_PER_USER".to_owned(),
                limit,
                usage: unfinished,
            },
            QUOTA_RETRY_AFTER_S,
        ));
    }
    // What the user stores: runs and output bytes (one counter read).
    let usage = state.infra.usage_of(&user_id).await?;
    for (name, limit, used, what) in [
        (
            "MAX_STORED_RUNS_PER_USER",
            state.config.max_stored_runs_per_user,
            usage.stored_runs,
            "runs stored",
        ),
        (
            "MAX_LOG_BYTES_PER_USER",
            state.config.max_log_bytes_per_user,
            usage.log_bytes,
            "bytes of output stored",
        ),
    ] {
        if used >= limit {
            // Waiting does not free this (deleting old runs does): no `Retry-After`.
            return Err(ApiError {
                retry_after_s: None,
                ..ApiError::too_many(
                    format!(
                        "user {user_id} has {used} {what}, the most {name} allows ({limit}); runs older than RETENTION_MAX_AGE_S ({} s) are deleted",
                        state.config.retention_max_age.as_secs()
                    ),
                    crate::error::Quota {
                        limit_name: name.to_owned(),
                        limit,
                        usage: used,
                    },
                    QUOTA_RETRY_AFTER_S,
                )
            });
        }
    }
    Span::current().record("run_id", field::display(run_id));
    let _dispatching = state.dispatching.start(run_id);
    state.infra.create_run(&record).await?;
    if let Err(e) = state.infra.add_usage(&user_id, 1, 0).await {
        warn!(run_id = %run_id, error = %e, "counting the stored run failed; the user's count is one short");
    }
    drop(quota_guard);

    if let Err(e) = dispatch(state, &record, &prefix, &run_id.to_string()).await {
        // The run is stored and indexed: it is accepted. Its message may even have landed
        // (only the ack lost); if not, the reconciler publishes it within two passes.
        warn!(run_id = %run_id, error = %e, "publishing the run failed; the reconciler will dispatch it");
    }
    let subject = prefix;
    info!(
        run_id = %run_id,
        user_id = %user_id,
        workflow_type = %req.workflow_type,
        workflow_engine = %req.workflow_engine,
        nats_subject = %subject,
        "Run created and dispatched"
    );
    Ok(run_id)
}

fn producer_span(subject: &str) -> Span {
    tracing::info_span!(
        "publish",
        otel.name = %format!("publish {subject}"),
        otel.kind = "producer",
        messaging.system = "nats",
        messaging.destination.name = %subject,
        messaging.operation.type = "publish",
    )
}

/// Publishes a run's message (under a producer span named after the subject `prefix`, whose
/// context travels in the `traceparent` header) and waits for the stream's ack, with
/// `msg_id` as its JetStream de-duplication id.
pub async fn dispatch(
    state: &AppState,
    rec: &RunRecord,
    prefix: &str,
    msg_id: &str,
) -> Result<(), String> {
    let subject = rec
        .subject
        .clone()
        .unwrap_or_else(|| run_message_subject(prefix, &rec.user_id, &rec.run_id));
    // The run may store what is left of its user's output quota (read now: a re-dispatch
    // gets what is left then).
    let max_output_bytes = match state.infra.usage_of(&rec.user_id).await {
        Ok(u) => Some(
            state
                .config
                .max_log_bytes_per_user
                .saturating_sub(u.log_bytes),
        ),
        Err(_) => None,
    };
    let message = RunRequestMessage {
        run_id: rec.run_id,
        request: rec.request.clone(),
        user_id: rec.user_id.clone(),
        trace_id: telemetry::propagation::span_id(&Span::current()),
        max_output_bytes,
    };
    let payload = Bytes::from(serde_json::to_vec(&message).expect("messages serialise"));
    let span = producer_span(prefix);
    let mut headers = HeaderMap::new();
    telemetry::propagation::inject(&span, &mut headers);
    state
        .infra
        .publish_run(&subject, msg_id, headers, payload)
        .instrument(span)
        .await
        .map_err(|e| e.to_string())
}

/// 413 when the record (and so the message) could not be stored with the room the engine
/// needs: the limit comes from the connected server's `max_payload`.
fn check_size(state: &AppState, rec: &RunRecord) -> Result<(), ApiError> {
    let size = serde_json::to_vec(rec).map_or(usize::MAX, |v| v.len());
    let limit = state.infra.record_limit();
    if size > limit {
        let request = serde_json::to_vec(&rec.request).map_or(usize::MAX, |v| v.len());
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "run too large: a request of {request} bytes (as JSON) does not fit in a run record of at most {limit} bytes (the NATS server's max_payload is {} bytes, of which {} are kept for the engine's run log)",
                state.infra.max_payload(),
                common::infra::RECORD_RESERVE
            ),
        ));
    }
    Ok(())
}

/// What a cancel request did.
pub struct CancelOutcome {
    /// The state after the request.
    pub state: State,
}

/// Cancels a run: QUEUED → CANCELED at once; INITIALIZING/RUNNING → CANCELING and a cancel
/// message to the owning engine; CANCELING → the message again; terminal → 409.
#[tracing::instrument(name = "request_cancel", skip_all, fields(run_id = %run_id, error = field::Empty))]
pub async fn request_cancel(
    state: &AppState,
    user_id: &str,
    run_id: RunId,
) -> Result<CancelOutcome, ApiError> {
    record_error(request_cancel_inner(state, user_id, run_id).await)
}

async fn request_cancel_inner(
    state: &AppState,
    user_id: &str,
    run_id: RunId,
) -> Result<CancelOutcome, ApiError> {
    enum Step {
        NotFound,
        Terminal(State),
        Canceled,
        Signal(Option<String>),
    }
    let step = state
        .infra
        .update_run(&run_id, |rec| match rec {
            Some(r) if r.user_id != user_id => Decision::Keep(Step::NotFound),
            None => Decision::Keep(Step::NotFound),
            Some(r) => match r.state {
                State::Queued => {
                    r.state = State::Canceled;
                    Decision::Write(Step::Canceled)
                }
                State::Initializing | State::Running => {
                    r.state = State::Canceling;
                    Decision::Write(Step::Signal(r.engine_id.clone()))
                }
                State::Canceling => Decision::Keep(Step::Signal(r.engine_id.clone())),
                other => Decision::Keep(Step::Terminal(other)),
            },
        })
        .await?;
    match step {
        Step::NotFound => Err(ApiError::not_found(format!("run not found: {run_id}"))),
        Step::Terminal(s) => Err(ApiError::conflict(format!(
            "run {run_id} is already {s} and cannot be cancelled"
        ))),
        Step::Canceled => {
            info!(run_id = %run_id, "Queued run canceled immediately");
            Ok(CancelOutcome {
                state: State::Canceled,
            })
        }
        Step::Signal(None) => {
            warn!(run_id = %run_id, "run has no owning engine yet; marked CANCELING");
            Ok(CancelOutcome {
                state: State::Canceling,
            })
        }
        Step::Signal(Some(engine_id)) => {
            let subject = cancel_subject(&engine_id);
            let span = producer_span(&subject);
            let mut headers = HeaderMap::new();
            telemetry::propagation::inject(&span, &mut headers);
            let payload = Bytes::from(
                serde_json::to_vec(&CancelMessage { run_id }).expect("messages serialise"),
            );
            let sent = async {
                state
                    .client
                    .publish_with_headers(subject.clone(), headers, payload)
                    .await?;
                state
                    .client
                    .flush()
                    .await
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            }
            .instrument(span)
            .await;
            if let Err(e) = sent {
                // The record already says CANCELING; the engine also honours that.
                warn!(run_id = %run_id, error = %e, "sending the cancel message failed; the engine will see CANCELING");
            }
            info!(run_id = %run_id, engine_id = %engine_id, "Cancel signal dispatched to engine");
            Ok(CancelOutcome {
                state: State::Canceling,
            })
        }
    }
}
