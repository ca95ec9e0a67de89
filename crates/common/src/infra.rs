//! The JetStream streams and KV buckets both services use, created idempotently by whichever
//! service starts first, the compare-and-set update of run records, and the indexes that let
//! every periodic task and listing avoid reading every record.
//!
//! Every state change of a run goes through [`Infra::update_run`]: read the entry and its
//! revision, let the caller decide, write only if the revision is unchanged, retry otherwise.
//! So the API's QUEUED→CANCELED and an engine's QUEUED→INITIALIZING cannot both win, and a
//! write whose state change `State::can_transition` forbids is refused. A write whose reply
//! was lost is recognised by reading the entry back.
//!
//! **Indexes** (see [`crate::nats`]): [`Infra::create_run`] writes `metis.user_runs.<user>.<id>`
//! and `metis.active.<user>.<id>` *before* the record, so every record has its index entries. A write
//! that makes a run terminal counts it on `metis.finished.<STATE>` (de-duplicated by run id)
//! and purges its active entry ([`Infra::finished`]); when that fails, the API's reconciler
//! finds the terminal record behind an active entry and finishes the job. Listing one user's
//! runs or the active runs is a subject listing of that index alone: terminal history of other
//! users never slows it.
//!
//! **Size.** A record must fit the server's `max_payload`. [`Infra::record_limit`] is that
//! minus [`RECORD_RESERVE`], the room kept for what the engine adds (a bounded `run_log`, an
//! error text); the API refuses a larger request with 413.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::model::{RunId, RunRecord, State};
use crate::nats::*;

/// Room kept in every record for what the engine adds after the API stored it.
pub const RECORD_RESERVE: usize = 32 * 1024;
/// The most bytes of `run_log.cmd` (all arguments together) an engine stores in a record.
pub const CMD_LIMIT: usize = 16 * 1024;
/// The most bytes of an `error` text stored in a record.
pub const ERROR_LIMIT: usize = 4 * 1024;
/// `METIS_LOGS`: the most bytes kept over all runs; past it new lines are refused (a run's
/// record then says its output was not all stored), never another run's evicted.
pub const LOGS_MAX_BYTES: i64 = 8 * 1024 * 1024 * 1024;
/// `METIS_LOGS`: the largest message (one output line is at most 16 KiB, plus its JSON).
pub const LOGS_MAX_MSG_SIZE: i32 = 64 * 1024;

/// What one user stores, as the quotas count it (`metis_usage`, by user token). Each change
/// is a compare-and-set: the API counts a run when it stores it, an engine the output bytes
/// it stored when the run ends, the retention sweep both when it deletes a run. A process
/// killed between a write and its count leaves the count off by that one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Runs stored (every state).
    pub stored_runs: u64,
    /// Bytes of output lines stored.
    pub log_bytes: u64,
}

/// A failure talking to JetStream, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct InfraError {
    context: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl InfraError {
    /// Wraps `source` with what was being done.
    pub fn new(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// What a [`Infra::update_run`] closure decided.
#[derive(Debug)]
pub enum Decision<T> {
    /// Write the modified record and return `T`.
    Write(T),
    /// Write nothing and return `T`.
    Keep(T),
}

/// Handles to every stream and bucket.
#[derive(Clone)]
pub struct Infra {
    /// The NATS connection.
    pub client: async_nats::Client,
    /// The JetStream context.
    pub js: jetstream::Context,
    /// `metis_runs`.
    pub runs: kv::Store,
    /// `metis_engine_configs`.
    pub engine_configs: kv::Store,
    /// `metis_engines`.
    pub engines: kv::Store,
    /// `metis_usage`.
    pub usage: kv::Store,
    /// `METIS_RUNS`.
    pub runs_stream: stream::Stream,
    /// `METIS_ACTIVE`.
    pub active: stream::Stream,
    /// `METIS_USER_RUNS`.
    pub user_runs: stream::Stream,
    /// `METIS_FINISHED`.
    pub finished: stream::Stream,
}

/// How long a request waits out a stream without a leader (an election after a server of a
/// cluster went away) before it fails. A server that is partitioned off (silent, not closed)
/// is only voted out after a raft election timeout, 4–9 s in NATS, and each try that reaches
/// its old leader costs the JetStream request timeout (5 s): 8 s was seen failing creates
/// after a docker network partition, 20 s rides it out.
pub const LEADER_CHANGE_WAIT: Duration = Duration::from_secs(20);

/// Whether an error is what JetStream answers while a stream has no leader: the request finds
/// no responder, or times out.
fn leaderless(e: &InfraError) -> bool {
    let text = e.to_string();
    [
        "no stream found",
        "no responders",
        "timed out",
        "leader",
        // A request the leader must answer (a leader read, stream info) while the group has
        // none: "JetStream system temporarily unavailable" (10008), or the stream offline.
        "temporarily unavailable",
        "10008",
        "offline",
        // A retry under the same Nats-Msg-Id while the try it repeats is still being stored:
        // the next try gets the duplicate's ack.
        "duplicate message id is in process",
        "10158",
    ]
    .iter()
    .any(|t| text.contains(t))
}

/// Runs `op` until it succeeds, retrying for at most [`LEADER_CHANGE_WAIT`] while JetStream
/// has no leader for the stream; each retry is an INFO event on the current span (so a trace
/// says when a leader change cost time). Other errors return at once. Used for writes that
/// are safe to repeat (de-duplicated or recognised as this caller's own) and for reads.
pub async fn during_failover<T, F, Fut>(what: &str, op: F) -> Result<T, InfraError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, InfraError>>,
{
    retry_leaderless(what, LEADER_CHANGE_WAIT, TRY_TIMEOUT, true, op).await
}

/// [`during_failover`] for reads: the same bound, each retry a DEBUG log line only (a read
/// repeats nothing, and its retries would make a span's events depend on timing).
pub async fn read_during_failover<T, F, Fut>(what: &str, op: F) -> Result<T, InfraError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, InfraError>>,
{
    retry_leaderless(what, LEADER_CHANGE_WAIT, TRY_TIMEOUT, false, op).await
}

/// How long start-up waits for a new cluster to place and elect the streams it creates.
pub const CREATE_STREAMS_WAIT: Duration = Duration::from_secs(45);

/// How long one try inside [`during_failover`] may take before it counts as timed out and is
/// tried again: shorter than the JetStream request timeout (5 s), so a try that went to a
/// leader that is gone does not eat a quarter of the bound (a rolling restart saw creates
/// take 5–8 s each). Every retried operation is safe to repeat (see [`during_failover`]).
pub const TRY_TIMEOUT: Duration = Duration::from_secs(2);

/// [`during_failover`] with its own bounds (`try_timeout` per try); `event`: each retry an
/// INFO event (else DEBUG).
async fn retry_leaderless<T, F, Fut>(
    what: &str,
    wait: Duration,
    try_timeout: Duration,
    event: bool,
    mut op: F,
) -> Result<T, InfraError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, InfraError>>,
{
    let start = std::time::Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        let attempt = match tokio::time::timeout(try_timeout, op()).await {
            Ok(result) => result,
            Err(_) => Err(InfraError::new(
                what.to_owned(),
                format!("timed out: no answer within {try_timeout:?}"),
            )),
        };
        match attempt {
            Ok(t) => return Ok(t),
            Err(e) if leaderless(&e) && start.elapsed() + delay < wait && !event => {
                tracing::debug!(
                    error = %e,
                    retry_in_ms = delay.as_millis() as u64,
                    "{what}: JetStream has no leader for the stream (a leader change); retrying"
                );
                tokio::time::sleep(delay).await; // backoff between retries of a read
                delay = (delay * 2).min(Duration::from_millis(800));
            }
            Err(e) if leaderless(&e) && start.elapsed() + delay < wait => {
                tracing::info!(
                    error = %e,
                    retry_in_ms = delay.as_millis() as u64,
                    "{what}: JetStream has no leader for the stream (a leader change); retrying"
                );
                tokio::time::sleep(delay).await; // backoff between retries of a write
                delay = (delay * 2).min(Duration::from_millis(800));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether a KV write lost a compare-and-set race (someone else wrote the key first): the
/// server's "wrong last sequence" — code 10071, or 10164, which a clustered server answers
/// and async-nats 0.51 reports as `Other` rather than `WrongLastRevision`. Found by
/// `two_apis_two_engines`: the engine's log-byte count and the API's run count raced on a
/// user's usage key, and the API gave up on the first try ("the user's count is one short").
fn lost_race<E: std::error::Error + 'static>(e: &E) -> bool {
    use async_nats::jetstream::{Error as JsError, ErrorCode};
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(js) = c.downcast_ref::<JsError>()
            && matches!(
                js.error_code(),
                ErrorCode::STREAM_WRONG_LAST_SEQUENCE
                    | ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
            )
        {
            return true;
        }
        if c.to_string().contains("wrong last sequence") {
            return true;
        }
        cause = c.source();
    }
    false
}

/// A stream config with the fields every Metis stream sets.
fn stream_config(name: &str, subjects: &str, description: &str) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![subjects.to_owned()],
        description: Some(description.to_owned()),
        ..Default::default()
    }
}

impl Infra {
    /// Creates (or updates to the expected config) every stream and bucket, replicated as
    /// [`crate::nats::default_replicas`] says for the server connected to.
    pub async fn ensure(client: async_nats::Client) -> Result<Self, InfraError> {
        Self::ensure_with(client, None).await
    }

    /// [`Infra::ensure`] with `replicas` copies of every stream and bucket (`None`: 3 on a
    /// cluster, 1 on a single server).
    pub async fn ensure_with(
        client: async_nats::Client,
        replicas: Option<usize>,
    ) -> Result<Self, InfraError> {
        let js = jetstream::new(client.clone());
        // A round trip first: the server's info (is it a cluster?) is known once connected,
        // and a JetStream cluster answers once its meta leader is elected.
        js.query_account()
            .await
            .map_err(|e| InfraError::new("reaching JetStream", e))?;
        let replicas =
            replicas.unwrap_or_else(|| crate::nats::default_replicas(&client.server_info()));
        let make = |config: stream::Config| {
            let js = js.clone();
            let config = stream::Config {
                num_replicas: replicas,
                ..config
            };
            async move {
                let name = config.name.clone();
                // A cluster just formed (or busy) may take a while to place a replicated
                // stream: creating it again is harmless, so wait it out.
                retry_leaderless(
                    "creating the streams",
                    CREATE_STREAMS_WAIT,
                    // A new cluster places a stream in its own time; only the bound applies.
                    CREATE_STREAMS_WAIT,
                    true,
                    || async {
                        js.create_or_update_stream(config.clone())
                            .await
                            .map_err(|e| InfraError::new(format!("creating stream {name}"), e))?;
                        js.get_stream(&name)
                            .await
                            .map_err(|e| InfraError::new(format!("opening stream {name}"), e))
                    },
                )
                .await
            }
        };
        let runs_stream = make(stream::Config {
            retention: stream::RetentionPolicy::WorkQueue,
            ..stream_config(
                RUNS_STREAM,
                RUNS_SUBJECTS,
                "Metis run requests, one consumer per engine name and version",
            )
        })
        .await?;
        make(stream::Config {
            // No age limit and no eviction: lines leave with their run (the API's retention
            // pass); a full stream refuses new lines instead of dropping anyone's old ones.
            max_bytes: LOGS_MAX_BYTES,
            max_message_size: LOGS_MAX_MSG_SIZE,
            discard: stream::DiscardPolicy::New,
            allow_direct: true,
            ..stream_config(
                LOGS_STREAM,
                LOGS_SUBJECTS,
                "Metis captured output lines, one subject per run",
            )
        })
        .await?;
        let active = make(stream::Config {
            max_messages_per_subject: 1,
            ..stream_config(
                ACTIVE_STREAM,
                ACTIVE_SUBJECTS,
                "Metis index: one subject per run that has not reached a terminal state",
            )
        })
        .await?;
        let user_runs = make(stream::Config {
            max_messages_per_subject: 1,
            ..stream_config(
                USER_RUNS_STREAM,
                USER_RUNS_SUBJECTS,
                "Metis index: one subject per run, grouped by user",
            )
        })
        .await?;
        let finished = make(stream::Config {
            duplicate_window: Duration::from_secs(120),
            ..stream_config(
                FINISHED_STREAM,
                FINISHED_SUBJECTS,
                "Metis counts: one message per run that reached a terminal state",
            )
        })
        .await?;
        let bucket = |name: &str, history: i64, max_age: Duration| kv::Config {
            bucket: name.to_owned(),
            history,
            max_age,
            num_replicas: replicas,
            ..Default::default()
        };
        let kv = |config: kv::Config| {
            let js = js.clone();
            async move {
                let name = config.bucket.clone();
                retry_leaderless(
                    "creating the buckets",
                    CREATE_STREAMS_WAIT,
                    // A new cluster places a stream in its own time; only the bound applies.
                    CREATE_STREAMS_WAIT,
                    true,
                    || async {
                        js.create_or_update_key_value(config.clone())
                            .await
                            .map_err(|e| InfraError::new(format!("creating bucket {name}"), e))
                    },
                )
                .await
            }
        };
        let runs = kv(bucket(RUNS_BUCKET, 1, Duration::ZERO)).await?;
        let engine_configs = kv(bucket(ENGINE_CONFIGS_BUCKET, 1, Duration::ZERO)).await?;
        let engines = kv(bucket(ENGINES_BUCKET, 1, ENGINES_BUCKET_MAX_AGE)).await?;
        let usage = kv(bucket(USAGE_BUCKET, 1, Duration::ZERO)).await?;
        Ok(Self {
            client,
            js,
            runs,
            engine_configs,
            engines,
            usage,
            runs_stream,
            active,
            user_runs,
            finished,
        })
    }

    /// The largest run record this server can store with room for what the engine adds:
    /// the server's `max_payload` minus [`RECORD_RESERVE`].
    #[must_use]
    pub fn record_limit(&self) -> usize {
        self.max_payload().saturating_sub(RECORD_RESERVE)
    }

    /// The connected server's `max_payload`.
    #[must_use]
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// The run record and its revision, as the bucket's stream leader has it. Not a KV `get`:
    /// that is a direct get, which any replica may answer, and a replica still catching up
    /// after a restart answered an old revision (an engine saw its claimed run QUEUED again
    /// and aborted it; a client could see a run it just created as missing).
    pub async fn get_run(&self, id: &RunId) -> Result<Option<(RunRecord, u64)>, InfraError> {
        let subject = format!("{}{id}", self.runs.prefix);
        let message = read_during_failover("reading the run", || async {
            match self
                .runs
                .stream
                .get_last_raw_message_by_subject(&subject)
                .await
            {
                Ok(m) => Ok(Some(m)),
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
                Err(e) => Err(InfraError::new(format!("reading run {id}"), e)),
            }
        })
        .await?;
        match message {
            // A put carries no operation header; a delete, a purge or a TTL marker does.
            Some(m)
                if m.headers.get("KV-Operation").is_none()
                    && m.headers.get("Nats-Marker-Reason").is_none() =>
            {
                let rec = serde_json::from_slice(&m.payload)
                    .map_err(|err| InfraError::new(format!("decoding run {id}"), err))?;
                Ok(Some((rec, m.sequence)))
            }
            _ => Ok(None),
        }
    }

    /// Stores a new record (fails if the key exists), after its index entries.
    pub async fn create_run(&self, rec: &RunRecord) -> Result<(), InfraError> {
        let id = rec.run_id;
        let body = Bytes::from(serde_json::to_vec(rec).expect("run records serialise"));
        during_failover("indexing the run", || async {
            // De-duplicated by run id: a timed-out try that lands late is stored once.
            let mut headers = HeaderMap::new();
            headers.insert(MSG_ID, id.to_string().as_str());
            let user = self
                .js
                .publish_with_headers(
                    user_run_subject(&rec.user_id, &id),
                    headers.clone(),
                    Bytes::new(),
                )
                .await
                .map_err(|e| InfraError::new(format!("indexing run {id}"), e))?;
            let active = self
                .js
                .publish_with_headers(active_subject(&rec.user_id, &id), headers, Bytes::new())
                .await
                .map_err(|e| InfraError::new(format!("indexing run {id}"), e))?;
            user.await
                .map_err(|e| InfraError::new(format!("indexing run {id}"), e))?;
            active
                .await
                .map_err(|e| InfraError::new(format!("indexing run {id}"), e))?;
            Ok(())
        })
        .await?;
        let mut attempt = 0;
        let stored = during_failover("storing the run", || {
            attempt += 1;
            let (body, retry) = (body.clone(), attempt > 1);
            async move {
                match self.runs.create(id.to_string(), body).await {
                    Ok(_) => Ok(()),
                    // A retried create whose first try landed (only its reply was lost).
                    Err(e) if retry && self.get_run(&id).await.is_ok_and(|r| r.is_some()) => {
                        tracing::debug!(run_id = %id, error = %e, "the run was stored by an earlier try");
                        Ok(())
                    }
                    Err(e) => Err(InfraError::new(format!("storing run {id}"), e)),
                }
            }
        })
        .await;
        match stored {
            // A try cut short may still have landed: one last look before saying it failed.
            Err(e) if self.get_run(&id).await.is_ok_and(|r| r.is_some()) => {
                tracing::debug!(run_id = %id, error = %e, "the run was stored by a try cut short");
                Ok(())
            }
            other => other,
        }
    }

    /// Compare-and-set loop on one run record. `decide` sees the current record (`None` if
    /// absent) and may modify it; [`Decision::Write`] writes it only if nobody wrote in between,
    /// otherwise `decide` runs again on the fresh record.
    pub async fn update_run<T>(
        &self,
        id: &RunId,
        mut decide: impl FnMut(Option<&mut RunRecord>) -> Decision<T>,
    ) -> Result<T, InfraError> {
        for _ in 0..64 {
            let Some((mut rec, revision)) = self.get_run(id).await? else {
                return match decide(None) {
                    Decision::Write(t) | Decision::Keep(t) => Ok(t),
                };
            };
            let before = rec.state;
            match decide(Some(&mut rec)) {
                Decision::Keep(t) => return Ok(t),
                Decision::Write(_) if rec.state != before && !before.can_transition(rec.state) => {
                    return Err(InfraError::new(
                        format!("updating run {id}"),
                        format!("refusing the transition {before} -> {}", rec.state),
                    ));
                }
                Decision::Write(t) => {
                    rec.updated_at = chrono::Utc::now();
                    if let Some(e) = rec.error.as_mut() {
                        truncate_text(e, ERROR_LIMIT);
                    }
                    let body =
                        Bytes::from(serde_json::to_vec(&rec).expect("run records serialise"));
                    let written = match self.runs.update(id.to_string(), body, revision).await {
                        Ok(_) => true,
                        Err(e)
                            if e.kind() == kv::UpdateErrorKind::WrongLastRevision
                                || lost_race(&e) =>
                        {
                            continue;
                        }
                        // The write may have landed and only its reply been lost: read it back.
                        Err(e) => match self.get_run(id).await {
                            Ok(Some((now, r))) if r > revision && now == rec => true,
                            _ => return Err(InfraError::new(format!("updating run {id}"), e)),
                        },
                    };
                    if written && !before.is_terminal() && rec.state.is_terminal() {
                        // Best effort: the reconciler repeats it for a terminal run still indexed.
                        let _ = self.finished(&rec.run_id, &rec.user_id, rec.state).await;
                    }
                    return Ok(t);
                }
            }
        }
        Err(InfraError::new(
            format!("updating run {id}"),
            "too many concurrent writers",
        ))
    }

    /// Indexes a run that reached terminal `state` under its user and state, counts it (once
    /// per run id within the stream's de-duplication window) and removes it from the active
    /// index (last: a run still in the active index is finished again by the reconciler).
    pub async fn finished(
        &self,
        id: &RunId,
        user_id: &str,
        state: State,
    ) -> Result<(), InfraError> {
        self.js
            .publish(user_finished_subject(user_id, id, state), Bytes::new())
            .await
            .map_err(|e| InfraError::new(format!("indexing run {id} as {state}"), e))?
            .await
            .map_err(|e| InfraError::new(format!("indexing run {id} as {state}"), e))?;
        let mut headers = HeaderMap::new();
        headers.insert(MSG_ID, id.to_string().as_str());
        self.js
            .publish_with_headers(finished_subject(state), headers, Bytes::new())
            .await
            .map_err(|e| InfraError::new(format!("counting run {id}"), e))?
            .await
            .map_err(|e| InfraError::new(format!("counting run {id}"), e))?;
        self.forget_active(id).await
    }

    /// Removes a run from the active index.
    pub async fn forget_active(&self, id: &RunId) -> Result<(), InfraError> {
        self.active
            .purge()
            .filter(active_run_filter(id))
            .await
            .map_err(|e| InfraError::new(format!("unindexing run {id}"), e))?;
        Ok(())
    }

    /// The runs in the active index: not yet terminal (or terminal and not yet unindexed).
    pub async fn active_runs(&self) -> Result<Vec<RunId>, InfraError> {
        let subjects = self.subjects(&self.active, ACTIVE_SUBJECTS).await?;
        Ok(subjects
            .keys()
            .filter_map(|s| s.rsplit('.').next()?.parse().ok())
            .collect())
    }

    /// The runs of `user_id` in the active index (one stream-info call, whatever else is
    /// stored): not terminal yet, or terminal a moment ago and not yet unindexed.
    pub async fn unfinished_runs_of(&self, user_id: &str) -> Result<Vec<RunId>, InfraError> {
        let subjects = self
            .subjects(&self.active, &user_active_filter(user_id))
            .await?;
        Ok(subjects
            .keys()
            .filter_map(|s| s.rsplit('.').next()?.parse().ok())
            .collect())
    }

    /// The runs of `user_id` that ended in terminal `state`, newest first (one stream-info
    /// call over that user's runs in that state; runs that finished before this index existed
    /// are not in it).
    pub async fn user_runs_in(
        &self,
        user_id: &str,
        state: State,
    ) -> Result<Vec<RunId>, InfraError> {
        self.user_index(&user_finished_filter(user_id, state)).await
    }

    /// Every run of `user_id`, newest first.
    pub async fn user_runs(&self, user_id: &str) -> Result<Vec<RunId>, InfraError> {
        self.user_index(&user_runs_filter(user_id)).await
    }

    /// The run ids (the last token) of the user-index subjects matching `filter`, newest first.
    async fn user_index(&self, filter: &str) -> Result<Vec<RunId>, InfraError> {
        let subjects = self.subjects(&self.user_runs, filter).await?;
        let mut ids: Vec<RunId> = subjects
            .keys()
            .filter_map(|s| s.rsplit('.').next()?.parse().ok())
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        Ok(ids)
    }

    /// Every key of `store`, from the stream's subject list (a key-listing consumer can miss
    /// a key that is updated while it runs; the stream's own list cannot). Deleted keys may
    /// be listed: their `get` answers nothing.
    pub async fn bucket_keys(&self, store: &kv::Store) -> Result<Vec<String>, InfraError> {
        let filter = format!("{}>", store.prefix);
        let subjects = self.subjects(&store.stream, &filter).await?;
        Ok(subjects
            .into_keys()
            .filter_map(|s| s.strip_prefix(store.prefix.as_str()).map(str::to_owned))
            .collect())
    }

    /// Runs that reached each terminal state (over all users).
    pub async fn finished_counts(&self) -> Result<BTreeMap<String, u64>, InfraError> {
        let subjects = self.subjects(&self.finished, FINISHED_SUBJECTS).await?;
        Ok(subjects
            .into_iter()
            .filter_map(|(s, n)| Some((s.rsplit('.').next()?.to_owned(), n)))
            .collect())
    }

    /// Deletes a run for good: its record (a compare-and-set purge against `revision`, so
    /// of several deleters one wins), then its output lines and its index entries. `Ok(false)`
    /// when the record changed or was deleted meanwhile (nothing else is touched then).
    pub async fn delete_run(
        &self,
        id: &RunId,
        user_id: &str,
        revision: Option<u64>,
    ) -> Result<bool, InfraError> {
        if let Err(e) = self
            .runs
            .purge_expect_revision(id.to_string(), revision)
            .await
        {
            let text = e.to_string().to_ascii_lowercase();
            if text.contains("wrong last sequence") {
                return Ok(false);
            }
            return Err(InfraError::new(format!("deleting run {id}"), e));
        }
        // The record is gone: the run is deleted. What follows is tidying (the purge's
        // marker, the lines, the index entries); what fails of it is left to the next pass,
        // which finds an index entry without a record ([`Infra::delete_leftovers`]).
        let marker = format!("{}{id}", self.runs.prefix);
        if let Err(e) = self.runs.stream.purge().filter(marker).await {
            tracing::warn!(run_id = %id, error = %e, "removing a deleted run's purge marker failed");
        }
        if let Err(e) = self.delete_leftovers(id, &user_token(user_id)).await {
            tracing::warn!(run_id = %id, error = %e, "removing a deleted run's lines and index entries failed; the next pass does");
        }
        Ok(true)
    }

    /// Removes what is left of a run whose record is gone: its output lines, then its index
    /// entries (`<user>` as its token; last, so a failure is found again by the next pass).
    pub async fn delete_leftovers(&self, id: &RunId, user: &str) -> Result<(), InfraError> {
        let logs = self
            .js
            .get_stream(LOGS_STREAM)
            .await
            .map_err(|e| InfraError::new(format!("opening stream {LOGS_STREAM}"), e))?;
        for filter in [logs_filter(id), legacy_logs_subject(id)] {
            logs.purge()
                .filter(filter.clone())
                .await
                .map_err(|e| InfraError::new(format!("purging {filter}"), e))?;
        }
        self.delete_index_of(id, user).await
    }

    /// Removes a run's entries from the user index (`<user>` as its token).
    pub async fn delete_index_of(&self, id: &RunId, user: &str) -> Result<(), InfraError> {
        for filter in [
            format!("metis.user_runs.{user}.{id}"),
            format!("metis.user_runs.{user}.*.{id}"),
        ] {
            self.user_runs
                .purge()
                .filter(filter.clone())
                .await
                .map_err(|e| InfraError::new(format!("purging {filter}"), e))?;
        }
        Ok(())
    }

    /// What `user_id` stores (zero when nothing was counted yet).
    pub async fn usage_of(&self, user_id: &str) -> Result<Usage, InfraError> {
        Ok(self.usage_entry(user_id).await?.0)
    }

    async fn usage_entry(&self, user_id: &str) -> Result<(Usage, u64), InfraError> {
        let key = user_token(user_id);
        // Like every read: a leader change or a lost server is waited out, not a 503.
        let entry = read_during_failover("reading the usage", || async {
            self.usage
                .entry(&key)
                .await
                .map_err(|e| InfraError::new(format!("reading the usage of {key}"), e))
        })
        .await?;
        Ok(match entry {
            Some(e) if e.operation == kv::Operation::Put => (
                serde_json::from_slice(&e.value).unwrap_or_default(),
                e.revision,
            ),
            Some(e) => (Usage::default(), e.revision),
            None => (Usage::default(), 0),
        })
    }

    /// Adds `runs` and `bytes` (either may be negative) to `user_id`'s usage, with
    /// compare-and-set (never below zero), waiting out a failover.
    pub async fn add_usage(&self, user_id: &str, runs: i64, bytes: i64) -> Result<(), InfraError> {
        let key = user_token(user_id);
        for _ in 0..64 {
            let (mut usage, revision) = self.usage_entry(user_id).await?;
            usage.stored_runs = usage.stored_runs.saturating_add_signed(runs);
            usage.log_bytes = usage.log_bytes.saturating_add_signed(bytes);
            let body = Bytes::from(serde_json::to_vec(&usage).expect("usage serialises"));
            // `true`: written; `false`: someone else wrote first (read again).
            let written = read_during_failover("counting the usage", || {
                let body = body.clone();
                let key = key.clone();
                async move {
                    let result = if revision == 0 {
                        self.usage.create(&key, body).await.map(drop).map_err(|e| {
                            (
                                e.kind() == kv::CreateErrorKind::AlreadyExists || lost_race(&e),
                                e.to_string(),
                            )
                        })
                    } else {
                        self.usage
                            .update(&key, body, revision)
                            .await
                            .map(drop)
                            .map_err(|e| {
                                (
                                    e.kind() == kv::UpdateErrorKind::WrongLastRevision
                                        || lost_race(&e),
                                    e.to_string(),
                                )
                            })
                    };
                    match result {
                        Ok(()) => Ok(true),
                        Err((true, _)) => Ok(false),
                        Err((false, e)) => {
                            Err(InfraError::new(format!("counting the usage of {key}"), e))
                        }
                    }
                }
            })
            .await?;
            if written {
                return Ok(());
            }
        }
        Err(InfraError::new(
            format!("counting the usage of {key}"),
            "too many concurrent writers",
        ))
    }

    /// Whether a run message for `subject` waits in `METIS_RUNS` (delivered or not, it stays
    /// until an engine acknowledges it).
    pub async fn has_run_message(&self, subject: &str) -> Result<bool, InfraError> {
        match self
            .runs_stream
            .get_last_raw_message_by_subject(subject)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(false),
            Err(e) => Err(InfraError::new(format!("looking up {subject}"), e)),
        }
    }

    /// Publishes a run message to JetStream and waits for the ack. `msg_id` is its
    /// de-duplication id: the run id when the API first dispatches it (a retried publish is
    /// stored once), something new when the reconciler publishes it again (the first id may
    /// still be in the de-duplication window although its message is gone).
    pub async fn publish_run(
        &self,
        subject: &str,
        msg_id: &str,
        mut headers: HeaderMap,
        payload: Bytes,
    ) -> Result<(), InfraError> {
        headers.insert(MSG_ID, msg_id);
        // Retried under the same Nats-Msg-Id: a try that landed is not stored twice.
        during_failover("publishing the run", || {
            let (headers, payload) = (headers.clone(), payload.clone());
            async move {
                self.js
                    .publish_with_headers(subject.to_owned(), headers, payload)
                    .await
                    .map_err(|e| InfraError::new(format!("publishing to {subject}"), e))?
                    .await
                    .map_err(|e| InfraError::new(format!("publishing to {subject}"), e))?;
                Ok(())
            }
        })
        .await
    }

    async fn subjects(
        &self,
        stream: &stream::Stream,
        filter: &str,
    ) -> Result<BTreeMap<String, u64>, InfraError> {
        let context = || format!("listing {filter}");
        // A listing pages through many subjects: only the overall bound applies, not the
        // per-try cut of a single request.
        retry_leaderless(
            "listing the index",
            LEADER_CHANGE_WAIT,
            LEADER_CHANGE_WAIT,
            false,
            || async {
                let mut info = stream
                    .info_with_subjects(filter)
                    .await
                    .map_err(|e| InfraError::new(context(), e))?;
                let mut out = BTreeMap::new();
                while let Some(item) = info.next().await {
                    let (subject, count) = item.map_err(|e| InfraError::new(context(), e))?;
                    out.insert(subject, u64::try_from(count).unwrap_or(0));
                }
                Ok(out)
            },
        )
        .await
    }
}

/// Cuts `text` to at most `max` bytes (on a character boundary), saying how much was cut.
pub fn truncate_text(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let total = text.len();
    let mut cut = max.saturating_sub(64);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(&format!("… ({} of {total} bytes not stored)", total - cut));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_changes_are_recognised_by_their_answers() {
        let e = |text: &str| InfraError::new("reading run x", text.to_owned());
        for text in [
            "JetStream error: JetStream system temporarily unavailable (code 503, error code 10008)",
            "timed out: no answer within 2s",
            "no responders",
            "stream is offline",
            "publish failed: duplicate message id is in process (code 409, error code 10158)",
        ] {
            assert!(leaderless(&e(text)), "{text}");
        }
        for text in ["wrong last sequence: 3", "invalid key"] {
            assert!(!leaderless(&e(text)), "{text}");
        }
    }

    #[test]
    fn truncation_keeps_a_boundary_and_says_so() {
        let mut s = "é".repeat(5000);
        truncate_text(&mut s, 1000);
        assert!(s.len() <= 1000, "{}", s.len());
        assert!(s.ends_with("bytes not stored)"), "{s}");
        let mut short = "ok".to_owned();
        truncate_text(&mut short, 10);
        assert_eq!(short, "ok");
    }
}
