//! Faults and load, as verbs on a [`Stack`]: what a scenario does to the system it tests.
//!
//! | verb | what it does |
//! | --- | --- |
//! | [`Stack::kill_engine`], [`Stack::terminate_engine`] | SIGKILL / SIGTERM to one engine instance |
//! | [`Stack::pause_engine`], [`Stack::resume_engine`] | SIGSTOP / SIGCONT (an engine that stops heartbeating without dying) |
//! | [`Stack::restart_engine`], [`Stack::replace_engine`] | SIGTERM, then a new instance in its place (a killed one: at once) |
//! | [`Stack::kill_api`], [`Stack::restart_api`] | SIGKILL the API; start it again on the same port, so clients follow |
//! | [`Stack::restart_nats`] | NATS stopped and started with its JetStream data kept, same address |
//! | [`Stack::freeze_nats`], [`Stack::thaw_nats`] | NATS paused (docker pause, local SIGSTOP) and resumed |
//! | [`Stack::refuse_exports`] | the receiver answers the next N exports with UNAVAILABLE/503 (or 429 `Retry-After`) |
//! | [`Stack::slow_exports`] | the receiver answers every export late (a slow collector) |
//! | [`Stack::lose_run_messages`] | every run message waiting in `METIS_RUNS` is purged (a lost message) |
//! | [`Stack::burst`] | N concurrent `POST /runs`, optionally from clients that hang up at once; returns what each was [`Told`] |
//! | [`Stack::check_history`] | the checker: every accepted run, and every run stored for the user, reaches a terminal state within a deadline |
//! | [`Stack::kill_nats_server`], [`Stack::restart_nats_server`] | one server of a cluster SIGKILLed; started again with its data (back once every stream is led and every replica current) |
//! | [`Stack::freeze_nats_server`], [`Stack::thaw_nats_server`] | one server of a cluster paused and resumed |
//! | [`Stack::partition_nats_server`], [`Stack::heal_nats_server`] | one server cut off (docker: it leaves the stack network; local: frozen) and back |
//! | [`Stack::nats_leader`] | the server leading a stream or bucket, to pick the one to kill |
//!
//! Each verb is a step on the scenario's timeline, so the artefacts say what was done when,
//! and an [`Action`] of the stack's [`crate::fault_trace::FaultLog`], so the snapshot shows it
//! as a span of service `e2e-harness`: in the trace of each run it hit, or in the harness's own
//! `faults` trace.
//! Every fault is undone by the harness: a paused engine is resumed (or killed) and a frozen
//! NATS thawed when the stack is dropped, also when the scenario fails.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::Signal;
use serde_json::Value;
use test_support::metis::start_api;
use tokio::io::AsyncWriteExt;

use crate::fault_trace::Action;
use crate::stack::Stack;

/// What one client of a [`Stack::burst`] was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Told {
    /// 200 with this run id.
    Accepted(String),
    /// Another status, with the error message.
    Refused(u16, String),
    /// No answer (connection refused or reset: the API was down).
    Failed(String),
    /// The client hung up right after sending, so it was told nothing.
    HungUp,
}

/// What a burst's clients were told, in the order they were started.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// One entry per client.
    pub told: Vec<Told>,
}

impl History {
    /// The run ids of every 200.
    #[must_use]
    pub fn accepted(&self) -> Vec<String> {
        self.told
            .iter()
            .filter_map(|t| match t {
                Told::Accepted(id) => Some(id.clone()),
                _ => None,
            })
            .collect()
    }

    /// How many clients were told what, e.g. `{"accepted": 60, "failed": 40}`.
    #[must_use]
    pub fn summary(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for t in &self.told {
            let key = match t {
                Told::Accepted(_) => "accepted".to_owned(),
                Told::Refused(s, _) => format!("refused {s}"),
                Told::Failed(_) => "no answer".to_owned(),
                Told::HungUp => "hung up".to_owned(),
            };
            *out.entry(key).or_default() += 1;
        }
        out
    }
}

impl Stack {
    fn engine_proc(&mut self, index: usize) -> Result<&mut test_support::Proc> {
        Ok(&mut self
            .engines
            .get_mut(index)
            .with_context(|| format!("no engine #{}", index + 1))?
            .proc)
    }

    /// The id engine `index` logged in its `engine ready` line.
    fn engine_id(&self, index: usize) -> Option<String> {
        self.engines
            .get(index)?
            .proc
            .lines()
            .iter()
            .find_map(|line| {
                let v: Value = serde_json::from_str(&line[line.find('{')?..]).ok()?;
                (v["message"] == "engine ready")
                    .then(|| v["engine_id"].as_str().map(str::to_owned))
                    .flatten()
            })
    }

    /// The ids of the runs whose record satisfies `pred`, read from the `metis_runs` bucket
    /// (none, with a timeline note, when it cannot be read: the fault span then goes into the
    /// harness's own trace).
    async fn runs_where(&self, pred: impl Fn(&common::RunRecord) -> bool) -> Vec<String> {
        let read = async {
            use futures::TryStreamExt as _;
            let client = self.infra.nats_endpoint.connect().await?;
            let js = async_nats::jetstream::new(client);
            let kv = js.get_key_value(common::nats::RUNS_BUCKET).await?;
            let keys: Vec<String> = kv.keys().await?.try_collect().await?;
            let mut ids = Vec::new();
            for key in keys {
                if let Some(bytes) = kv.get(&key).await?
                    && let Ok(record) = serde_json::from_slice::<common::RunRecord>(&bytes)
                    && pred(&record)
                {
                    ids.push(record.run_id.to_string());
                }
            }
            anyhow::Ok(ids)
        };
        match tokio::time::timeout(Duration::from_secs(5), read).await {
            Ok(Ok(ids)) => ids,
            Ok(Err(e)) => {
                self.timeline
                    .note(format!("reading the runs a fault hits failed: {e:#}"));
                Vec::new()
            }
            Err(_) => {
                self.timeline
                    .note("reading the runs a fault hits timed out (5 s)");
                Vec::new()
            }
        }
    }

    /// The unfinished runs engine `index` holds now.
    async fn runs_of_engine(&self, index: usize) -> Vec<String> {
        let Some(id) = self.engine_id(index) else {
            return Vec::new();
        };
        self.runs_where(|r| !r.state.is_terminal() && r.engine_id.as_deref() == Some(&id))
            .await
    }

    /// SIGKILL to engine `index` (0-based, in start order): it stops at once, flushing nothing.
    pub async fn kill_engine(&mut self, index: usize) -> Result<()> {
        let hits = self.runs_of_engine(index).await;
        let action = Action::new("kill engine", &engine_name(index)).hitting(hits, "engine killed");
        let step = self
            .timeline
            .step(format!("killing engine #{} (SIGKILL)", index + 1));
        self.engine_proc(index)?.kill().await?;
        step.done();
        self.faults.done(action);
        Ok(())
    }

    /// SIGTERM to engine `index`; waits for its clean exit (see [`Stack::stop_engine`]).
    pub async fn terminate_engine(&mut self, index: usize) -> Result<()> {
        self.stop_engine(index).await
    }

    /// SIGSTOP to engine `index`: it stays alive but does nothing, heartbeats included. The
    /// `pause engine` span lasts until [`Stack::resume_engine`].
    pub async fn pause_engine(&mut self, index: usize) -> Result<()> {
        let hits = self.runs_of_engine(index).await;
        let action =
            Action::new("pause engine", &engine_name(index)).hitting(hits, "engine paused");
        let step = self
            .timeline
            .step(format!("pausing engine #{} (SIGSTOP)", index + 1));
        self.engine_proc(index)?.signal(Signal::SIGSTOP)?;
        step.done();
        self.faults.begin(action);
        Ok(())
    }

    /// SIGCONT to engine `index`.
    pub async fn resume_engine(&mut self, index: usize) -> Result<()> {
        let step = self
            .timeline
            .step(format!("resuming engine #{} (SIGCONT)", index + 1));
        self.engine_proc(index)?.signal(Signal::SIGCONT)?;
        step.done();
        self.faults.end("pause engine", &engine_name(index));
        Ok(())
    }

    /// SIGTERM to engine `index`, then a new instance (a new id) in its place.
    pub async fn restart_engine(&mut self, index: usize) -> Result<()> {
        let hits = self.runs_of_engine(index).await;
        let action =
            Action::new("restart engine", &engine_name(index)).hitting(hits, "engine restarted");
        self.stop_engine(index).await?;
        self.start_engine().await?;
        let fresh = self.engines.pop().context("the new engine")?;
        self.engines[index] = fresh;
        self.faults.done(action);
        Ok(())
    }

    /// A new engine instance in place of engine `index`: started at once when the old one is
    /// gone (killed), else after it stopped (as [`Stack::restart_engine`]).
    pub async fn replace_engine(&mut self, index: usize) -> Result<()> {
        if !self.engine_proc(index)?.has_exited() {
            return self.restart_engine(index).await;
        }
        self.start_engine().await?;
        let fresh = self.engines.pop().context("the new engine")?;
        self.engines[index] = fresh;
        Ok(())
    }

    /// SIGKILL to the API: requests in flight are cut, its unexported spans are lost.
    pub async fn kill_api(&mut self) -> Result<()> {
        let action = Action::new("kill API", "metis-api");
        let step = self.timeline.step("killing metis-api (SIGKILL)");
        if let Some(api) = self.api.as_mut() {
            api.proc.kill().await?;
        }
        step.done();
        self.faults.done(action);
        Ok(())
    }

    /// SIGTERM to the API, waiting for it to exit: it finishes its requests and flushes its
    /// spans (a flush that fails is logged and lost). [`Stack::restart_api`] brings it back.
    pub async fn stop_api(&mut self) -> Result<()> {
        let action = Action::new("stop API", "metis-api");
        let step = self.timeline.step("stopping metis-api (SIGTERM)");
        if let Some(api) = self.api.as_mut() {
            let status = api.proc.terminate(Duration::from_secs(30)).await?;
            anyhow::ensure!(
                status.success(),
                "metis-api exited with {status} on SIGTERM"
            );
        }
        step.done();
        self.faults.done(action);
        Ok(())
    }

    /// Starts the API again on the port it had, so [`Stack::client`] keeps working.
    pub async fn restart_api(&mut self) -> Result<()> {
        let action = Action::new("restart API", "metis-api");
        let step = self.timeline.step("restarting metis-api on the same port");
        let port = self
            .client
            .base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .context("the API's port")?;
        if let Some(api) = self.api.as_mut()
            && !api.proc.has_exited()
        {
            api.proc.kill().await?;
        }
        let mut env = self.api_env();
        env.push(("APP_PORT", port.to_string()));
        let api = start_api(
            &self.infra.nats_endpoint,
            &self.dir.join("api-restarted"),
            &env,
        )
        .await?;
        self.api = Some(api);
        step.done();
        self.faults.done(action);
        Ok(())
    }

    /// Restarts NATS with its JetStream data kept (SIGKILL-like when `kill`).
    pub async fn restart_nats(&mut self, kill: bool) -> Result<()> {
        let action = Action::new("restart NATS", "nats").with("nats.killed", kill);
        let step = self.timeline.step(format!(
            "restarting NATS ({}), JetStream data kept",
            if kill { "killed" } else { "stopped" }
        ));
        self.infra.restart_nats(kill).await?;
        step.done();
        self.faults.done(action);
        Ok(())
    }

    /// The receiver refuses the next `n` exports (any service, any signal) as `with` says;
    /// the exporters' retries are what is tested.
    pub async fn refuse_exports(
        &mut self,
        n: u64,
        with: crate::otlp::fault::Refusal,
    ) -> Result<()> {
        let action = Action::new("refuse exports", "otlp-receiver")
            .with("exports.refused", i64::try_from(n).unwrap_or(i64::MAX))
            .with("exports.refused_with", format!("{with:?}"));
        let step = self.timeline.step(format!(
            "the receiver refuses the next {n} exports ({with:?})"
        ));
        self.receiver
            .set_faults(&crate::otlp::fault::FaultMode {
                refuse: n,
                refuse_with: with,
                retry_after_s: 1,
                delay_ms: 0,
            })
            .await
            .context("setting the receiver's fault mode")?;
        step.done();
        self.faults.done(action);
        Ok(())
    }

    /// The receiver answers every export `ms` late (a slow collector), until set otherwise.
    pub async fn slow_exports(&mut self, ms: u64) -> Result<()> {
        let action = Action::new("slow collector", "otlp-receiver")
            .with("exports.delay_ms", i64::try_from(ms).unwrap_or(i64::MAX));
        let step = self
            .timeline
            .step(format!("the receiver answers every export {ms} ms late"));
        self.receiver
            .set_faults(&crate::otlp::fault::FaultMode {
                refuse: 0,
                refuse_with: crate::otlp::fault::Refusal::Unavailable,
                retry_after_s: 1,
                delay_ms: ms,
            })
            .await
            .context("setting the receiver's fault mode")?;
        step.done();
        self.faults.done(action);
        Ok(())
    }

    /// Purges every run message waiting in `METIS_RUNS`, as if it had been lost; returns how
    /// many there were.
    pub async fn lose_run_messages(&mut self) -> Result<u64> {
        let hits = self.runs_where(|r| r.state == common::State::Queued).await;
        let action =
            Action::new("lose run messages", "METIS_RUNS").hitting(hits, "run message purged");
        let step = self
            .timeline
            .step("losing every run message waiting in METIS_RUNS (purge)");
        let client = self.infra.nats_endpoint.connect().await?;
        let js = async_nats::jetstream::new(client);
        let stream = js
            .get_stream("METIS_RUNS")
            .await
            .context("opening METIS_RUNS")?;
        let purged = stream.purge().await.context("purging METIS_RUNS")?.purged;
        step.done();
        self.timeline.note(format!("{purged} run message(s) lost"));
        self.faults.done(action);
        Ok(purged)
    }

    /// Freezes NATS: every connection stays open and nothing answers.
    pub async fn freeze_nats(&mut self) -> Result<()> {
        let step = self.timeline.step("freezing NATS");
        self.infra.freeze_nats().await?;
        step.done();
        self.faults.begin(Action::new("freeze NATS", "nats"));
        Ok(())
    }

    /// Thaws NATS.
    pub async fn thaw_nats(&mut self) -> Result<()> {
        let step = self.timeline.step("thawing NATS");
        self.infra.thaw_nats().await?;
        step.done();
        self.faults.end("freeze NATS", "nats");
        Ok(())
    }

    /// The NATS server that leads stream `stream` now (a KV bucket's stream is `KV_<bucket>`),
    /// as JetStream reports it; on a single server, that server. The harness remembers it: a
    /// server killed or cut off afterwards is marked `nats.leader_of` the streams it was read
    /// to lead, and a different answer for the same stream later records `new leader observed`
    /// (see [`crate::fault_trace`]).
    pub async fn nats_leader(&self, stream: &str) -> Result<String> {
        let client = self.infra.nats_endpoint.connect().await?;
        let js = async_nats::jetstream::new(client);
        let mut s = js
            .get_stream(stream)
            .await
            .with_context(|| format!("opening stream {stream}"))?;
        let info = s
            .info()
            .await
            .with_context(|| format!("reading stream {stream}"))?;
        let leader = info
            .cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .unwrap_or_else(|| "nats".to_owned());
        self.timeline.note(format!("{stream} is led by {leader}"));
        self.faults.observe_leader(stream, &leader);
        Ok(leader)
    }

    /// SIGKILLs NATS server `name` of the cluster (docker: kills its container).
    pub async fn kill_nats_server(&mut self, name: &str) -> Result<()> {
        let action = self.server_action("kill NATS server", name);
        let step = self.timeline.step(format!("killing NATS server {name}"));
        self.infra.kill_nats_server(name).await?;
        step.done();
        self.faults.done(action);
        Ok(())
    }

    /// An action on NATS server `name`: its label, and the streams it was last read to lead.
    fn server_action(&self, what: &str, name: &str) -> Action {
        let led = self.faults.led_by(name);
        let action = Action::new(what, &self.faults.server_label(name));
        if led.is_empty() {
            action
        } else {
            action.with(
                "nats.leader_of",
                opentelemetry::Value::Array(
                    led.into_iter()
                        .map(opentelemetry::StringValue::from)
                        .collect::<Vec<_>>()
                        .into(),
                ),
            )
        }
    }

    /// Starts NATS server `name` again with its data and waits until the cluster has formed.
    pub async fn restart_nats_server(&mut self, name: &str) -> Result<()> {
        let action = Action::new("restart NATS server", &self.faults.server_label(name));
        let step = self
            .timeline
            .step(format!("restarting NATS server {name}, data kept"));
        self.infra.restart_nats_server(name).await?;
        step.done();
        let step = self
            .timeline
            .step("waiting until every stream and bucket has a leader");
        self.infra.wait_streams_led().await?;
        step.done();
        self.faults.done(action);
        Ok(())
    }

    /// Cuts NATS server `name` off the others and the host (docker only: it leaves the
    /// stack's network).
    pub async fn partition_nats_server(&mut self, name: &str) -> Result<()> {
        let step = self
            .timeline
            .step(format!("partitioning NATS server {name}"));
        self.infra.partition_nats_server(name).await?;
        step.done();
        let action = self.server_action("partition NATS server", name);
        self.faults.begin(action);
        Ok(())
    }

    /// Freezes cluster server `name` (local SIGSTOP, docker pause).
    pub async fn freeze_nats_server(&mut self, name: &str) -> Result<()> {
        let step = self.timeline.step(format!("freezing NATS server {name}"));
        self.infra.freeze_nats_server(name).await?;
        step.done();
        let action = self.server_action("freeze NATS server", name);
        self.faults.begin(action);
        Ok(())
    }

    /// Thaws a server [`Stack::freeze_nats_server`] froze.
    pub async fn thaw_nats_server(&mut self, name: &str) -> Result<()> {
        let step = self.timeline.step(format!("thawing NATS server {name}"));
        self.infra.thaw_nats_server(name).await?;
        step.done();
        self.faults
            .end("freeze NATS server", &self.faults.server_label(name));
        Ok(())
    }

    /// Reconnects a partitioned server and waits until the cluster has formed again.
    pub async fn heal_nats_server(&mut self, name: &str) -> Result<()> {
        let step = self
            .timeline
            .step(format!("reconnecting NATS server {name}"));
        self.infra.heal_nats_server(name).await?;
        step.done();
        let step = self
            .timeline
            .step("waiting until every stream and bucket has a leader");
        self.infra.wait_streams_led().await?;
        step.done();
        self.faults
            .end("partition NATS server", &self.faults.server_label(name));
        Ok(())
    }

    /// `n` concurrent `POST /runs` with `body` as user `alice`. With `hang_up`, each client
    /// sends its whole request and closes the connection at once. See [`Stack::load`] to
    /// inject a fault mid-burst.
    pub async fn burst(&self, n: usize, body: &Value, hang_up: bool) -> Result<History> {
        self.load().burst(n, body, hang_up).await
    }

    /// A load driver that does not borrow the stack, so a fault can be injected while its
    /// burst runs (e.g. in a `tokio::spawn`ed task).
    #[must_use]
    pub fn load(&self) -> Load {
        Load {
            client: self.client.clone(),
            timeline: self.timeline.clone(),
            faults: self.faults.clone(),
            accepted: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// The load driver of a [`Stack`]: sends requests and records what each client was told.
#[derive(Clone)]
pub struct Load {
    client: test_support::metis::ApiClient,
    timeline: crate::progress::Timeline,
    faults: crate::fault_trace::FaultLog,
    /// 200s so far, over every burst of this driver.
    pub accepted: Arc<AtomicUsize>,
}

impl Load {
    /// How many 200s this driver has seen so far.
    #[must_use]
    pub fn accepted_so_far(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// See [`Stack::burst`].
    pub async fn burst(&self, n: usize, body: &Value, hang_up: bool) -> Result<History> {
        let accepted = self.accepted.clone();
        let step = self.timeline.step(format!(
            "{n} concurrent POST /runs{}",
            if hang_up {
                " from clients that hang up"
            } else {
                ""
            }
        ));
        let hung_up = hang_up.then(|| {
            Action::new("clients hang up", "metis-api")
                .with("clients", i64::try_from(n).unwrap_or(i64::MAX))
        });
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let client = self.client.clone();
            let body = body.clone();
            let accepted = accepted.clone();
            tasks.spawn(async move {
                let told = if hang_up {
                    hang_up_post(&client.base, &body).await
                } else {
                    match client.post("/runs", &body).await {
                        Ok(r) if r.status == 200 => match r.body["run_id"].as_str() {
                            Some(id) => {
                                accepted.fetch_add(1, Ordering::SeqCst);
                                Told::Accepted(id.to_owned())
                            }
                            None => Told::Refused(200, format!("no run_id in {}", r.body)),
                        },
                        Ok(r) => Told::Refused(
                            r.status,
                            r.body["msg"].as_str().unwrap_or_default().to_owned(),
                        ),
                        Err(e) => Told::Failed(format!("{e:#}")),
                    }
                };
                (i, told)
            });
        }
        let mut told = vec![Told::HungUp; n];
        while let Some(done) = tasks.join_next().await {
            let (i, t) = done.context("a burst client panicked")?;
            told[i] = t;
        }
        let history = History { told };
        step.done();
        if let Some(action) = hung_up {
            self.faults.done(action);
        }
        self.timeline
            .note(format!("burst clients were told: {:?}", history.summary()));
        Ok(history)
    }
}

impl Stack {
    /// The checker: every run in `history` that got a 200, and every run stored for the
    /// client's user, reaches a terminal state within `deadline`. Returns the final state of
    /// each run (by id), or an error naming the runs that did not finish and their states.
    pub async fn check_history(
        &self,
        history: &History,
        deadline: Duration,
    ) -> Result<BTreeMap<String, String>> {
        let step = self
            .timeline
            .step("checking that every accepted or stored run is terminal");
        let client = self.client.clone();
        let accepted = history.accepted();
        let states = test_support::wait_for(
            "every accepted and every stored run to reach a terminal state",
            deadline,
            || async {
                let mut ids: Vec<String> =
                    list_all_runs(&client).await.map_err(|e| e.to_string())?;
                for id in &accepted {
                    if !ids.contains(id) {
                        ids.push(id.clone());
                    }
                }
                let mut states = BTreeMap::new();
                let mut unfinished = Vec::new();
                for id in &ids {
                    let state = client.state(id).await.map_err(|e| format!("{id}: {e:#}"))?;
                    if !TERMINAL.contains(&state.as_str()) {
                        unfinished.push(format!("{id} {state}"));
                    }
                    states.insert(id.clone(), state);
                }
                if unfinished.is_empty() {
                    Ok(states)
                } else {
                    Err(format!(
                        "{} of {} runs not terminal: {}",
                        unfinished.len(),
                        ids.len(),
                        unfinished.join(", ")
                    ))
                }
            },
        )
        .await?;
        let missing: Vec<&String> = accepted
            .iter()
            .filter(|id| !states.contains_key(*id))
            .collect();
        anyhow::ensure!(
            missing.is_empty(),
            "accepted runs that are not stored: {missing:?}"
        );
        step.done();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for s in states.values() {
            *counts.entry(s.as_str()).or_default() += 1;
        }
        self.timeline.note(format!(
            "{} runs stored, {} accepted; final states {counts:?}",
            states.len(),
            accepted.len()
        ));
        Ok(states)
    }
}

pub use test_support::{RunProcesses, processes_marked};

/// The processes of `user`'s RUNNING run `run`, by the PID namespace of its sandbox, which
/// `sleep.sh` and `stubborn.sh` write to `pidns` in their workdir (killed when dropped).
pub async fn run_processes(stack: &crate::Stack, user: &str, run: &str) -> Result<RunProcesses> {
    let file = stack.dir.join("runs").join(user).join(run).join("pidns");
    RunProcesses::from_file(&file, std::time::Duration::from_secs(30)).await
}

/// The terminal run states.
pub const TERMINAL: [&str; 5] = [
    "COMPLETE",
    "EXECUTOR_ERROR",
    "SYSTEM_ERROR",
    "CANCELED",
    "PREEMPTED",
];

/// Every run id of the client's user, through the paged `GET /runs`.
pub async fn list_all_runs(client: &test_support::metis::ApiClient) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            Some(t) => format!("/runs?page_size=1000&page_token={t}"),
            None => "/runs?page_size=1000".to_owned(),
        };
        let reply = client.get(&path).await?;
        anyhow::ensure!(
            reply.status == 200,
            "GET {path}: {} {}",
            reply.status,
            reply.body
        );
        for r in reply.body["runs"].as_array().into_iter().flatten() {
            if let Some(id) = r["run_id"].as_str() {
                ids.push(id.to_owned());
            }
        }
        match reply.body["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => return Ok(ids),
        }
    }
}

/// Sends a complete `POST /runs` over a raw connection and closes it without reading.
async fn hang_up_post(base: &str, body: &Value) -> Told {
    let addr = base.trim_start_matches("http://").to_owned();
    let body = body.to_string();
    let request = format!(
        "POST /runs HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\nauthorization: Bearer {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        test_support::metis::mint_token("alice"),
        body.len()
    );
    match tokio::net::TcpStream::connect(&addr).await {
        Ok(mut stream) => {
            if let Err(e) = stream.write_all(request.as_bytes()).await {
                return Told::Failed(e.to_string());
            }
            let _ = stream.shutdown().await;
            drop(stream);
            Told::HungUp
        }
        Err(e) => Told::Failed(e.to_string()),
    }
}

/// The harness's name for engine `index` (0-based), as its artefacts name it: `engine-1`.
fn engine_name(index: usize) -> String {
    format!("engine-{}", index + 1)
}
