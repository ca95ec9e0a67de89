//! The JetStream streams and KV buckets both services use, created idempotently by whichever
//! service starts first, and the compare-and-set update of run records.
//!
//! Every state change of a run goes through [`Infra::update_run`]: read the entry and its
//! revision, let the caller decide, write only if the revision is unchanged, retry otherwise.
//! So the API's QUEUED→CANCELED and an engine's QUEUED→INITIALIZING cannot both win, and a
//! write whose state change `State::can_transition` forbids is refused.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;

use crate::model::{RunId, RunRecord};
use crate::nats::*;

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
    /// The JetStream context.
    pub js: jetstream::Context,
    /// `metis_runs`.
    pub runs: kv::Store,
    /// `metis_engine_configs`.
    pub engine_configs: kv::Store,
    /// `metis_engines`.
    pub engines: kv::Store,
}

impl Infra {
    /// Creates (or updates to the expected config) every stream and bucket.
    pub async fn ensure(client: async_nats::Client) -> Result<Self, InfraError> {
        let js = jetstream::new(client);
        js.create_or_update_stream(stream::Config {
            name: RUNS_STREAM.to_owned(),
            subjects: vec![RUNS_SUBJECTS.to_owned()],
            retention: stream::RetentionPolicy::WorkQueue,
            description: Some(
                "Metis run requests, one consumer per engine name and version".into(),
            ),
            ..Default::default()
        })
        .await
        .map_err(|e| InfraError::new(format!("creating stream {RUNS_STREAM}"), e))?;
        js.create_or_update_stream(stream::Config {
            name: LOGS_STREAM.to_owned(),
            subjects: vec![LOGS_SUBJECTS.to_owned()],
            description: Some("Metis captured output lines, one subject per run".into()),
            max_age: Duration::from_secs(7 * 24 * 3600),
            allow_direct: true,
            ..Default::default()
        })
        .await
        .map_err(|e| InfraError::new(format!("creating stream {LOGS_STREAM}"), e))?;
        let bucket = |name: &str, history: i64, max_age: Duration| kv::Config {
            bucket: name.to_owned(),
            history,
            max_age,
            ..Default::default()
        };
        let runs = js
            .create_or_update_key_value(bucket(RUNS_BUCKET, 1, Duration::ZERO))
            .await
            .map_err(|e| InfraError::new(format!("creating bucket {RUNS_BUCKET}"), e))?;
        let engine_configs = js
            .create_or_update_key_value(bucket(ENGINE_CONFIGS_BUCKET, 1, Duration::ZERO))
            .await
            .map_err(|e| InfraError::new(format!("creating bucket {ENGINE_CONFIGS_BUCKET}"), e))?;
        let engines = js
            .create_or_update_key_value(bucket(ENGINES_BUCKET, 1, ENGINE_TTL))
            .await
            .map_err(|e| InfraError::new(format!("creating bucket {ENGINES_BUCKET}"), e))?;
        Ok(Self {
            js,
            runs,
            engine_configs,
            engines,
        })
    }

    /// The run record and its revision.
    pub async fn get_run(&self, id: &RunId) -> Result<Option<(RunRecord, u64)>, InfraError> {
        let entry = self
            .runs
            .entry(id.to_string())
            .await
            .map_err(|e| InfraError::new(format!("reading run {id}"), e))?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                let rec = serde_json::from_slice(&e.value)
                    .map_err(|err| InfraError::new(format!("decoding run {id}"), err))?;
                Ok(Some((rec, e.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Stores a new record; fails if the key exists.
    pub async fn create_run(&self, rec: &RunRecord) -> Result<(), InfraError> {
        let body = Bytes::from(serde_json::to_vec(rec).expect("run records serialise"));
        self.runs
            .create(rec.run_id.to_string(), body)
            .await
            .map_err(|e| InfraError::new(format!("storing run {}", rec.run_id), e))?;
        Ok(())
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
                    let body =
                        Bytes::from(serde_json::to_vec(&rec).expect("run records serialise"));
                    match self.runs.update(id.to_string(), body, revision).await {
                        Ok(_) => return Ok(t),
                        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                        Err(e) => return Err(InfraError::new(format!("updating run {id}"), e)),
                    }
                }
            }
        }
        Err(InfraError::new(
            format!("updating run {id}"),
            "too many concurrent writers",
        ))
    }

    /// Every run record (skipping entries that do not decode, which are logged by the caller).
    pub async fn all_runs(&self) -> Result<Vec<Result<RunRecord, String>>, InfraError> {
        use futures_util::StreamExt;
        let mut keys = self
            .runs
            .keys()
            .await
            .map_err(|e| InfraError::new("listing runs", e))?;
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| InfraError::new("listing runs", e))?;
            let Some(value) = self
                .runs
                .get(&key)
                .await
                .map_err(|e| InfraError::new(format!("reading run {key}"), e))?
            else {
                continue;
            };
            out.push(serde_json::from_slice(&value).map_err(|e| format!("run {key}: {e}")));
        }
        Ok(out)
    }
}
