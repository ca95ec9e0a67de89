//! The test bed: a real `nats-server -js`, engine.yaml files derived from
//! `fixtures/engines/generic.yaml` with a temp workdir base, `metis-engine-generic` processes,
//! and the NATS side of the API (create the record, publish the message, read the record and
//! the logs), done exactly as `metis-api` does it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use bytes::Bytes;
use common::infra::{Decision, Infra};
use common::nats::{self, cancel_subject, run_subject};
use common::{
    CancelMessage, FullEngineConfig, LogLine, RunId, RunRecord, RunRequest, RunRequestMessage,
    State,
};
use futures::StreamExt;
use serde_json::Value;
use test_support::{NatsServer, Proc, clean_command, wait_for};

/// How long a test waits for anything the engine does.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The user every test run belongs to.
pub const USER: &str = "alice";

/// A trace context the runs carry, as the API's producer span would.
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// One test's NATS server, temp dir and API-side client.
pub struct Bed {
    /// The server.
    pub nats: NatsServer,
    /// A client of it.
    pub client: async_nats::Client,
    /// Streams and buckets.
    pub infra: Infra,
    /// Configs, workdirs and other files of this test.
    pub dir: tempfile::TempDir,
    /// Where process output is copied.
    pub logs: PathBuf,
}

/// A running `metis-engine-generic`.
pub struct Engine {
    /// The process.
    pub proc: Proc,
    /// Its instance id.
    pub id: String,
    /// Its health server's port.
    pub port: u16,
}

impl Bed {
    /// Starts NATS and creates the streams and buckets.
    pub async fn start(name: &str) -> Result<Self> {
        let logs = test_support::log_dir(&format!("engine-it/{name}"));
        let nats = NatsServer::start(&logs).await?;
        let client = nats.connect().await.context("connecting to nats")?;
        let infra = Infra::ensure(client.clone()).await?;
        let dir = tempfile::tempdir()?;
        Ok(Self {
            nats,
            client,
            infra,
            dir,
            logs,
        })
    }

    /// The workdir base every config of this bed uses.
    pub fn runs_dir(&self) -> PathBuf {
        self.dir.path().join("runs")
    }

    /// The workdir of a run of [`USER`].
    pub fn workdir(&self, id: &RunId) -> PathBuf {
        self.runs_dir().join(USER).join(id.to_string())
    }

    /// Writes `fixtures/engines/generic.yaml`, with the workdir base in the temp dir and
    /// `edit` applied, as `<dir>/<file>`.
    pub fn config(&self, file: &str, edit: impl FnOnce(&mut FullEngineConfig)) -> Result<PathBuf> {
        let mut cfg = FullEngineConfig::load(&fixtures().join("engines/generic.yaml"))?;
        cfg.runs.workdir.base = self.runs_dir();
        edit(&mut cfg);
        let path = self.dir.path().join(file);
        std::fs::write(&path, serde_yaml_ng::to_string(&cfg)?)?;
        Ok(path)
    }

    /// The environment the engine gets (besides PATH, HOME and TMPDIR).
    pub fn env(&self, config: &Path) -> Vec<(String, String)> {
        [
            ("ENGINE_CONFIG_PATH", config.to_string_lossy().into_owned()),
            ("NATS_URL", self.nats.url.clone()),
            ("NATS_USER", test_support::NATS_TEST_USER.to_owned()),
            ("NATS_PASSWORD", self.nats.password.clone()),
            ("HEALTH_PORT", "0".to_owned()),
            ("RUST_LOG", "info".to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
            ("SHUTDOWN_GRACE_MS", "2000".to_owned()),
            ("HEARTBEAT_INTERVAL_MS", "250".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Starts an engine and waits for `listening` and `engine ready`.
    pub async fn engine(&self, name: &str, config: &Path) -> Result<Engine> {
        self.engine_with(name, config, &[]).await
    }

    /// Like [`Bed::engine`], with extra (or overriding) environment variables.
    pub async fn engine_with(
        &self,
        name: &str,
        config: &Path,
        extra: &[(&str, &str)],
    ) -> Result<Engine> {
        let mut cmd = clean_command(test_support::bin("metis-engine-generic")?);
        cmd.envs(self.env(config));
        cmd.envs(extra.iter().map(|(k, v)| (*k, *v)));
        let mut proc = Proc::spawn(name, cmd, &self.logs)?;
        let port = proc
            .wait_for_line("the listening line", TIMEOUT, |l| {
                let v = json_line(l)?;
                (v["message"] == "listening")
                    .then(|| v["addr"].as_str()?.rsplit(':').next()?.parse::<u16>().ok())?
            })
            .await?;
        let id = proc
            .wait_for_line("engine ready", TIMEOUT, |l| {
                let v = json_line(l)?;
                (v["message"] == "engine ready")
                    .then(|| v["engine_id"].as_str().map(str::to_owned))?
            })
            .await?;
        Ok(Engine { proc, id, port })
    }

    /// A request for `fixtures/workflows/<script>` with `workflow_params`.
    pub fn request(&self, script: &str, workflow_params: Value) -> RunRequest {
        RunRequest {
            workflow_type: "SH".into(),
            workflow_type_version: "1".into(),
            workflow_url: fixtures()
                .join("workflows")
                .join(script)
                .to_string_lossy()
                .into_owned(),
            workflow_engine: "generic".into(),
            workflow_engine_version: "1".into(),
            workflow_params: workflow_params.as_object().cloned(),
            workflow_engine_parameters: None,
            tags: Some(BTreeMap::from([(
                "test".to_owned(),
                "engine-it".to_owned(),
            )])),
        }
    }

    /// Stores a QUEUED record and publishes the run message, as `POST /runs` does.
    pub async fn submit(&self, req: RunRequest) -> Result<RunId> {
        let id = RunId::new();
        self.infra
            .create_run(&RunRecord::queued(id, USER.into(), req.clone()))
            .await?;
        self.publish(id, req).await?;
        Ok(id)
    }

    /// Publishes a run message (with a `traceparent` header) on its user's subject, as the API
    /// does, and waits for JetStream's ack.
    pub async fn publish(&self, id: RunId, request: RunRequest) -> Result<()> {
        let msg = RunRequestMessage {
            run_id: id,
            request,
            user_id: USER.into(),
            trace_id: Some("b7ad6b7169203331".into()),
            max_output_bytes: None,
        };
        self.publish_on(
            &format!("{}.{id}", common::nats::user_token(USER)),
            serde_json::to_vec(&msg)?,
        )
        .await
    }

    /// Publishes any payload on the generic engine's run subjects (last token `malformed`).
    pub async fn publish_raw(&self, payload: Vec<u8>) -> Result<()> {
        self.publish_on("malformed", payload).await
    }

    /// Publishes any payload on `metis.runs.generic.1.SH.1.<last>` (a `<last>` of one token is
    /// the layout of earlier API versions, without the user: the engine's shared consumer).
    pub async fn publish_on(&self, last: &str, payload: Vec<u8>) -> Result<()> {
        let mut headers = HeaderMap::new();
        headers.insert(nats::TRACEPARENT, TRACEPARENT);
        self.infra
            .js
            .publish_with_headers(
                format!("{}.{last}", run_subject("generic", "1", "SH", "1")),
                headers,
                Bytes::from(payload),
            )
            .await?
            .await?;
        Ok(())
    }

    /// Sets CANCELING (from INITIALIZING or RUNNING) and sends the cancel message to the
    /// owning engine, as `POST /runs/{id}/cancel` does.
    pub async fn cancel(&self, id: RunId) -> Result<()> {
        let owner = self
            .infra
            .update_run(&id, |r| match r {
                Some(r) if matches!(r.state, State::Initializing | State::Running) => {
                    r.state = State::Canceling;
                    Decision::Write(r.engine_id.clone())
                }
                _ => Decision::Keep(None),
            })
            .await?;
        let Some(owner) = owner else {
            bail!("run {id} is not INITIALIZING or RUNNING with an owner")
        };
        self.send_cancel(&owner, serde_json::to_vec(&CancelMessage { run_id: id })?)
            .await
    }

    /// Sends a raw cancel payload to an engine instance.
    pub async fn send_cancel(&self, engine_id: &str, payload: Vec<u8>) -> Result<()> {
        let mut headers = HeaderMap::new();
        headers.insert(nats::TRACEPARENT, TRACEPARENT);
        self.client
            .publish_with_headers(cancel_subject(engine_id), headers, Bytes::from(payload))
            .await?;
        self.client.flush().await?;
        Ok(())
    }

    /// The run's record.
    pub async fn record(&self, id: RunId) -> Result<RunRecord> {
        Ok(self
            .infra
            .get_run(&id)
            .await?
            .context("run record missing")?
            .0)
    }

    /// Waits until the run's state satisfies `done`.
    pub async fn wait_state(
        &self,
        id: RunId,
        what: &str,
        done: impl Fn(State) -> bool,
    ) -> Result<RunRecord> {
        wait_for(&format!("run {id} to be {what}"), TIMEOUT, || async {
            match self.infra.get_run(&id).await {
                Ok(Some((rec, _))) if done(rec.state) => Ok(rec),
                Ok(Some((rec, _))) => Err(format!("state {}", rec.state)),
                Ok(None) => Err("no record".into()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// Waits until the run is in a terminal state.
    pub async fn wait_terminal(&self, id: RunId) -> Result<RunRecord> {
        self.wait_state(id, "terminal", State::is_terminal).await
    }

    /// Every stored output line of a run, in stream order.
    pub async fn logs(&self, id: RunId) -> Result<Vec<LogLine>> {
        let stream = self.infra.js.get_stream(nats::LOGS_STREAM).await?;
        let consumer = stream
            .create_consumer(pull::Config {
                filter_subject: nats::logs_filter(&id),
                ack_policy: AckPolicy::None,
                ..Default::default()
            })
            .await?;
        let mut out = Vec::new();
        loop {
            let mut batch = consumer.fetch().max_messages(500).messages().await?;
            let before = out.len();
            while let Some(msg) = batch.next().await {
                let msg = msg.map_err(|e| anyhow::anyhow!("{e}"))?;
                out.push(serde_json::from_slice::<LogLine>(&msg.payload)?);
            }
            if out.len() == before {
                return Ok(out);
            }
        }
    }

    /// The run's processes, from its `workdir/pidns` file (written by `sleep.sh` and
    /// `stubborn.sh`); they are killed if the test fails.
    pub async fn processes_of(&self, id: RunId) -> Result<test_support::RunProcesses> {
        test_support::RunProcesses::from_file(&self.workdir(&id).join("pidns"), TIMEOUT).await
    }
}

impl Engine {
    /// Waits for a JSON log event for which `pick` returns `Some`.
    pub async fn wait_event<T>(
        &mut self,
        what: &str,
        pick: impl Fn(&Value) -> Option<T>,
    ) -> Result<T> {
        self.proc
            .wait_for_line(what, TIMEOUT, |l| pick(&json_line(l)?))
            .await
    }

    /// Every JSON log event so far.
    pub fn events(&self) -> Vec<Value> {
        self.proc
            .lines()
            .iter()
            .filter_map(|l| json_line(l))
            .collect()
    }

    /// SIGTERM and wait for the exit.
    pub async fn stop(&mut self) -> Result<std::process::ExitStatus> {
        self.proc.terminate(TIMEOUT).await
    }
}

/// A log line as JSON, if it is one.
pub fn json_line(line: &str) -> Option<Value> {
    serde_json::from_str(line).ok()
}

/// Whether `event` is about `run_id` (its own field or its span's).
pub fn about(event: &Value, run_id: &RunId) -> bool {
    let id = run_id.to_string();
    event["run_id"] == id.as_str() || event["span"]["run_id"] == id.as_str()
}

/// `<workspace>/fixtures`.
pub fn fixtures() -> PathBuf {
    test_support::workspace_root().join("fixtures")
}

/// Waits until no live process is left in group `pgid`.
pub async fn wait_gone(run: &test_support::RunProcesses) -> Result<()> {
    run.wait_gone(TIMEOUT).await
}
