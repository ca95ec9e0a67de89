//! The router and its handlers. Routes sit at the root; every error is `{"msg","status_code"}`.
//!
//! | route | meaning |
//! | --- | --- |
//! | `POST /runs` | validate, store, dispatch → `{"run_id"}` |
//! | `GET /runs` | the caller's runs, newest first, paged, `?state=` filter |
//! | `GET /runs/{run_id}` | the full run: request, state, run_log, error |
//! | `GET /runs/{run_id}/status` | `{"run_id","state"}` |
//! | `POST /runs/{run_id}/cancel` | cancel; 409 when already finished |
//! | `GET /runs/{run_id}/logs` | captured output lines in order, paged |
//! | `GET /service-info` | WES service info, registered engines, state counts |
//! | `GET /healthz`, `GET /readyz` | liveness; readiness (NATS connected, buckets there) |
//! | `GET /openapi.json` | the OpenAPI document |
//!
//! A run belongs to the user its bearer token names (`sub`; see [`crate::auth`]); other users
//! get 404, a request without a valid token 401. `/healthz`, `/readyz`, `/service-info` and
//! `/openapi.json` are public.

use std::collections::BTreeMap;

use axum::extract::{DefaultBodyLimit, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json as AxJson, Router};
use chrono::{DateTime, Utc};
use common::{EngineRegistration, LogLine, LogStream, RunId, RunLog, RunRecord, RunRequest, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{BODY_LIMIT, PathRunId, RunRequestBody, UserId};

/// The whole router, with the HTTP span layer, the body limit and the body deadline
/// (`HTTP_BODY_TIMEOUT_MS`).
pub fn router(state: AppState) -> Router {
    let body_timeout = state.config.body_timeout;
    Router::new()
        .route("/runs", post(create_run).get(list_runs))
        .route("/runs/{run_id}", get(get_run))
        .route("/runs/{run_id}/status", get(get_status))
        .route("/runs/{run_id}/cancel", post(cancel_run))
        .route("/runs/{run_id}/logs", get(get_logs))
        .route("/service-info", get(service_info))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            body_timeout,
        ))
        .layer(crate::http_trace::layer())
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {}", uri.path()),
    )
}

/// `{"run_id"}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunIdResponse {
    /// The run.
    pub run_id: RunId,
}

/// `{"run_id","state"}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunStatus {
    /// The run.
    pub run_id: RunId,
    /// Its state.
    pub state: State,
}

/// Create a run.
#[utoipa::path(post, path = "/runs", request_body = RunRequest,
    responses((status = 200, body = RunIdResponse), (status = 400, body = ErrorBody), (status = 408, description = "the body did not arrive within HTTP_BODY_TIMEOUT_MS", body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 429, description = "the caller is at a per-user limit: MAX_UNFINISHED_RUNS_PER_USER runs not yet terminal (with Retry-After), MAX_STORED_RUNS_PER_USER runs stored or MAX_LOG_BYTES_PER_USER bytes of output stored; the body's quota names the limit and the usage", body = ErrorBody)))]
pub async fn create_run(
    AxState(state): AxState<AppState>,
    UserId(user): UserId,
    RunRequestBody(req): RunRequestBody,
) -> Result<AxJson<RunIdResponse>, ApiError> {
    let run_id = crate::service::create_run(&state, user, req).await?;
    Ok(AxJson(RunIdResponse { run_id }))
}

/// Query of `GET /runs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1–1000, default 50.
    #[param(minimum = 1, maximum = 1000)]
    pub page_size: Option<usize>,
    /// `next_page_token` of the previous page.
    #[param(format = Uuid)]
    pub page_token: Option<String>,
    /// Only runs in this state.
    #[param(value_type = Option<State>)]
    pub state: Option<String>,
}

/// One run in a listing.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunSummary {
    /// The run.
    pub run_id: RunId,
    /// Its state.
    pub state: State,
    /// When it was accepted.
    pub start_time: DateTime<Utc>,
    /// When it reached a terminal state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<DateTime<Utc>>,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
}

/// A page of runs.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunListResponse {
    /// Newest first.
    pub runs: Vec<RunSummary>,
    /// Pass as `page_token` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

fn page_size(v: Option<usize>, default: usize) -> Result<usize, ApiError> {
    match v {
        None => Ok(default),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "page_size: must be between 1 and 1000, got {n}"
        ))),
    }
}

/// List the caller's runs.
#[utoipa::path(get, path = "/runs", params(ListQuery), responses((status = 200, body = RunListResponse), (status = 400, body = ErrorBody)))]
pub async fn list_runs(
    AxState(state): AxState<AppState>,
    UserId(user): UserId,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<AxJson<RunListResponse>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let size = page_size(q.page_size, 50)?;
    let filter = q
        .state
        .as_deref()
        .map(str::parse::<State>)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("state: {e}")))?;
    let after = q
        .page_token
        .as_deref()
        .map(|t| {
            // Only what a previous page handed out: a hyphenated UUID.
            let parsed = (t.len() == 36).then(|| t.parse::<RunId>().ok()).flatten();
            parsed.ok_or_else(|| {
                ApiError::bad_request(format!(
                    "page_token: '{t}' is not a token from a previous page"
                ))
            })
        })
        .transpose()?;
    // The user's index alone, newest first: other users' history costs nothing here. A
    // state filter reads an index of its own, so a page reads the records it returns and at
    // most the user's unfinished runs (which the quota bounds): those, because a run that
    // has just ended is indexed under its final state a moment after its record says so.
    let ids = match filter {
        None => state.infra.user_runs(&user).await?,
        Some(s) => {
            let mut ids = state.infra.unfinished_runs_of(&user).await?;
            if s.is_terminal() {
                ids.extend(state.infra.user_runs_in(&user, s).await?);
            }
            ids.sort_unstable_by(|a, b| b.cmp(a));
            ids.dedup();
            ids
        }
    };
    let mut runs: Vec<RunRecord> = Vec::new();
    let mut next_page_token = None;
    for id in ids.into_iter().filter(|id| after.is_none_or(|a| *id < a)) {
        let Some((rec, _)) = state.infra.get_run(&id).await? else {
            continue;
        };
        if rec.user_id != user || filter.is_some_and(|s| rec.state != s) {
            continue;
        }
        if runs.len() == size {
            next_page_token = runs.last().map(|r| r.run_id.to_string());
            break;
        }
        runs.push(rec);
    }
    let runs = runs
        .into_iter()
        .map(|r| RunSummary {
            run_id: r.run_id,
            state: r.state,
            start_time: r.created_at,
            end_time: r.state.is_terminal().then_some(r.updated_at),
            tags: r.request.tags.clone().unwrap_or_default(),
        })
        .collect();
    Ok(AxJson(RunListResponse {
        runs,
        next_page_token,
    }))
}

/// A run in full.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    /// The run.
    pub run_id: RunId,
    /// The accepted request.
    pub request: RunRequest,
    /// Its state.
    pub state: State,
    /// The process log, once there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_log: Option<RunLog>,
    /// Why it failed, for EXECUTOR_ERROR and SYSTEM_ERROR.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The engine instance that ran it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_id: Option<String>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// Its last change.
    pub updated_at: DateTime<Utc>,
    /// Workflow outputs (none are collected yet).
    #[schema(value_type = Object)]
    pub outputs: serde_json::Value,
}

async fn load(state: &AppState, user: &str, run_id: RunId) -> Result<RunRecord, ApiError> {
    match state.infra.get_run(&run_id).await? {
        Some((rec, _)) if rec.user_id == user => Ok(rec),
        _ => Err(ApiError::not_found(format!("run not found: {run_id}"))),
    }
}

/// Get a run.
#[utoipa::path(get, path = "/runs/{run_id}", params(("run_id" = RunId, Path, description = "the run id `POST /runs` returned")), responses((status = 200, body = RunDetail), (status = 404, body = ErrorBody)))]
pub async fn get_run(
    AxState(state): AxState<AppState>,
    UserId(user): UserId,
    PathRunId(id): PathRunId,
) -> Result<AxJson<RunDetail>, ApiError> {
    let r = load(&state, &user, id).await?;
    Ok(AxJson(RunDetail {
        run_id: r.run_id,
        request: r.request,
        state: r.state,
        run_log: r.run_log,
        error: r.error,
        engine_id: r.engine_id,
        created_at: r.created_at,
        updated_at: r.updated_at,
        outputs: serde_json::json!({}),
    }))
}

/// Get a run's state.
#[utoipa::path(get, path = "/runs/{run_id}/status", params(("run_id" = RunId, Path, description = "the run id `POST /runs` returned")), responses((status = 200, body = RunStatus), (status = 404, body = ErrorBody)))]
pub async fn get_status(
    AxState(state): AxState<AppState>,
    UserId(user): UserId,
    PathRunId(id): PathRunId,
) -> Result<AxJson<RunStatus>, ApiError> {
    let r = load(&state, &user, id).await?;
    Ok(AxJson(RunStatus {
        run_id: r.run_id,
        state: r.state,
    }))
}

/// Cancel a run.
#[utoipa::path(post, path = "/runs/{run_id}/cancel", params(("run_id" = RunId, Path, description = "the run id `POST /runs` returned")),
    responses((status = 200, body = RunStatus), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel_run(
    AxState(state): AxState<AppState>,
    UserId(user): UserId,
    PathRunId(id): PathRunId,
) -> Result<AxJson<RunStatus>, ApiError> {
    let outcome = crate::service::request_cancel(&state, &user, id).await?;
    Ok(AxJson(RunStatus {
        run_id: id,
        state: outcome.state,
    }))
}

/// Query of `GET /runs/{run_id}/logs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// 1–1000, default 500.
    #[param(minimum = 1, maximum = 1000)]
    pub page_size: Option<usize>,
    /// `next_page_token` of the previous page.
    #[param(pattern = r"^[0-9]{1,19}$")]
    pub page_token: Option<String>,
    /// `stdout` or `stderr`; both when absent.
    #[param(value_type = Option<LogStream>)]
    pub stream: Option<String>,
}

/// A page of output lines.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LogsResponse {
    /// In the order the engine read them.
    pub lines: Vec<LogLine>,
    /// Pass as `page_token` for the next page; absent when nothing more is stored yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
    /// When part or all of the run's output is not here, why: a cap it reached while
    /// running (`MAX_RUN_OUTPUT_BYTES`, `MAX_LOG_BYTES_PER_USER`, a full log store), or
    /// lines its record counts that are no longer stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

/// Get a run's captured output.
#[utoipa::path(get, path = "/runs/{run_id}/logs", params(("run_id" = RunId, Path, description = "the run id `POST /runs` returned"), LogsQuery), responses((status = 200, body = LogsResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_logs(
    AxState(state): AxState<AppState>,
    UserId(user): UserId,
    PathRunId(id): PathRunId,
    query: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<AxJson<LogsResponse>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let size = page_size(q.page_size, 500)?;
    let only = q
        .stream
        .as_deref()
        .map(str::parse::<LogStream>)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("stream: {e}")))?;
    let start = match q.page_token.as_deref() {
        None => 1,
        Some(t) => (t.len() <= 19 && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "page_token: '{t}' is not a token from a previous page"
                ))
            })?,
    };
    let rec = load(&state, &user, id).await?;
    let page = crate::logs::read(&state.infra.js, &id, start, size, only).await?;
    let run_log = rec.run_log.unwrap_or_default();
    let stored = run_log.output_lines.unwrap_or(0);
    let notice = if start == 1 && only.is_none() && page.lines.is_empty() && stored > 0 {
        Some(format!(
            "this run stored {stored} output lines, which are no longer in the log store"
        ))
    } else {
        run_log.output_note
    };
    Ok(AxJson(LogsResponse {
        lines: page.lines,
        next_page_token: page.next.map(|n| n.to_string()),
        notice,
    }))
}

/// Versions of one workflow type or engine.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Versions {
    /// Sorted, without duplicates.
    pub versions: Vec<String>,
}

/// A registered engine and its live instances.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EngineInfo {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Accepted workflow types.
    pub workflow_types: Vec<String>,
    /// Accepted workflow type versions.
    pub workflow_type_versions: Vec<String>,
    /// Instances heartbeating now (none: runs wait QUEUED until one starts).
    pub instances: Vec<InstanceInfo>,
    /// The engine's parameter rules.
    #[schema(value_type = Object)]
    pub engine_params: serde_json::Value,
}

/// A live engine instance, as the public service info shows it: how many runs it holds,
/// never which (run ids are their users' business).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InstanceInfo {
    /// Instance id.
    pub id: String,
    /// Engine name.
    pub name: String,
    /// Engine version.
    pub version: String,
    /// When the instance started.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// Runs in flight on it at its last heartbeat.
    pub runs_in_flight: usize,
    /// How it isolates each run: `bubblewrap` (namespaces, a uid of its own, limits), or
    /// `none` when it was started with `METIS_UNSAFE_NO_SANDBOX=1` (development only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

impl From<EngineRegistration> for InstanceInfo {
    fn from(r: EngineRegistration) -> Self {
        Self {
            runs_in_flight: r.runs.len(),
            id: r.id,
            name: r.name,
            version: r.version,
            started_at: r.started_at,
            heartbeat_at: r.heartbeat_at,
            sandbox: r.sandbox,
        }
    }
}

/// WES service info.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ServiceInfo {
    /// Service name.
    pub name: String,
    /// Service version.
    pub version: String,
    /// WES versions spoken.
    pub supported_wes_versions: Vec<String>,
    /// Workflow type → versions, over all registered engines.
    pub workflow_type_versions: BTreeMap<String, Versions>,
    /// Engine name → versions.
    pub workflow_engine_versions: BTreeMap<String, Versions>,
    /// Registered engines.
    pub engines: Vec<EngineInfo>,
    /// State → number of runs (all users). Unfinished runs are counted by the reaper's last
    /// pass, so these are at most `REAPER_INTERVAL_MS` old.
    pub system_state_counts: BTreeMap<String, u64>,
    /// The per-user limits a create may hit (a 429 past them), by the setting that sets them,
    /// and how long finished runs are kept (`RETENTION_MAX_AGE_S`).
    pub limits: BTreeMap<String, u64>,
    /// The caller's usage of each per-user limit, when the request carries the caller's
    /// credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<BTreeMap<String, u64>>,
}

/// Service info; with the caller's credentials, also the caller's usage of each limit.
#[utoipa::path(get, path = "/service-info", responses((status = 200, body = ServiceInfo)))]
pub async fn service_info(
    AxState(state): AxState<AppState>,
    mut parts: axum::http::request::Parts,
) -> Result<AxJson<ServiceInfo>, ApiError> {
    // Public: without credentials (or with bad ones) the limits alone.
    let identified = parts
        .headers
        .contains_key(axum::http::header::AUTHORIZATION)
        || parts.headers.contains_key(crate::extract::USER_HEADER);
    let caller = if identified {
        <UserId as axum::extract::FromRequestParts<AppState>>::from_request_parts(
            &mut parts, &state,
        )
        .await
        .ok()
    } else {
        None
    };
    let usage = match caller {
        Some(UserId(user)) => {
            let stored = state.infra.usage_of(&user).await?;
            let unfinished = state.infra.unfinished_runs_of(&user).await?.len() as u64;
            Some(BTreeMap::from([
                ("MAX_UNFINISHED_RUNS_PER_USER".to_owned(), unfinished),
                ("MAX_STORED_RUNS_PER_USER".to_owned(), stored.stored_runs),
                ("MAX_LOG_BYTES_PER_USER".to_owned(), stored.log_bytes),
            ]))
        }
        None => None,
    };
    let specs = crate::service::registered_engines(&state).await?;
    let mut instances: Vec<EngineRegistration> = Vec::new();
    for key in state
        .infra
        .bucket_keys(&state.infra.engines)
        .await
        .map_err(ApiError::unavailable)?
    {
        if let Ok(Some(bytes)) = state.infra.engines.get(&key).await
            && let Ok(reg) = serde_json::from_slice::<EngineRegistration>(&bytes)
            && is_recent(&reg, state.config.engine_ttl)
        {
            instances.push(reg);
        }
    }
    instances.sort_by(|a, b| a.id.cmp(&b.id));
    let mut types: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut engine_versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut engines = Vec::new();
    for s in specs {
        for t in &s.workflow_types {
            types
                .entry(t.clone())
                .or_default()
                .extend(s.workflow_type_versions.iter().cloned());
        }
        engine_versions
            .entry(s.name.clone())
            .or_default()
            .push(s.version.clone());
        engines.push(EngineInfo {
            instances: instances
                .iter()
                .filter(|i| i.name == s.name && i.version == s.version)
                .cloned()
                .map(InstanceInfo::from)
                .collect(),
            engine_params: serde_json::to_value(&s.engine_params).unwrap_or_default(),
            name: s.name,
            version: s.version,
            workflow_types: s.workflow_types,
            workflow_type_versions: s.workflow_type_versions,
        });
    }
    let versions = |m: BTreeMap<String, Vec<String>>| {
        m.into_iter()
            .map(|(k, mut v)| {
                v.sort();
                v.dedup();
                (k, Versions { versions: v })
            })
            .collect()
    };
    // Finished runs are counted as they finish (one stream-info call); the unfinished ones
    // as the reaper's last pass counted them: no request reads a run record here.
    let mut counts = state.infra.finished_counts().await?;
    counts.extend(state.active_counts.get());
    Ok(AxJson(ServiceInfo {
        name: "Metis".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        supported_wes_versions: vec!["1.1.0".to_owned()],
        workflow_type_versions: versions(types),
        workflow_engine_versions: versions(engine_versions),
        engines,
        system_state_counts: counts,
        limits: BTreeMap::from([
            (
                "MAX_UNFINISHED_RUNS_PER_USER".to_owned(),
                state.config.max_unfinished_per_user,
            ),
            (
                "MAX_STORED_RUNS_PER_USER".to_owned(),
                state.config.max_stored_runs_per_user,
            ),
            (
                "MAX_LOG_BYTES_PER_USER".to_owned(),
                state.config.max_log_bytes_per_user,
            ),
            (
                "RETENTION_MAX_AGE_S".to_owned(),
                state.config.retention_max_age.as_secs(),
            ),
        ]),
        usage,
    }))
}

/// Whether a registration's last heartbeat is younger than the TTL (by this host's clock;
/// the reaper judges liveness without comparing clocks).
fn is_recent(reg: &EngineRegistration, ttl: std::time::Duration) -> bool {
    let age = Utc::now().signed_duration_since(reg.heartbeat_at);
    age.to_std().map_or(true, |age| age <= ttl)
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "the process serves HTTP")))]
pub async fn healthz() -> impl IntoResponse {
    AxJson(serde_json::json!({"status": "ok"}))
}

/// Readiness: NATS connected and the run bucket reachable.
#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "ready"), (status = 503, body = ErrorBody)))]
pub async fn readyz(
    AxState(state): AxState<AppState>,
) -> Result<AxJson<serde_json::Value>, ApiError> {
    if state.client.connection_state() != async_nats::connection::State::Connected {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to NATS",
        ));
    }
    // A real round trip (the KV handle's status is cached): a frozen or lost server is not
    // ready even while the TCP connection still looks up.
    let probe = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        state.infra.runs.stream.get_info(),
    )
    .await;
    match probe {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("bucket metis_runs unavailable: {e}"),
            ));
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "NATS did not answer within 2 s",
            ));
        }
    }
    Ok(AxJson(serde_json::json!({"status": "ok"})))
}

/// The OpenAPI document, with the rules of the engines registered now (without them while
/// NATS cannot be read: the document itself stays available).
pub async fn openapi(AxState(state): AxState<AppState>) -> impl IntoResponse {
    // From the watched configs (no NATS read per request); the bucket itself only before
    // the watch has seen any.
    let cached = state.configs.all();
    if !cached.is_empty() {
        return AxJson(crate::openapi::document_for(&cached));
    }
    match crate::service::registered_engines(&state).await {
        Ok(specs) => AxJson(crate::openapi::document_for(&specs)),
        Err(_) => AxJson(crate::openapi::document()),
    }
}
