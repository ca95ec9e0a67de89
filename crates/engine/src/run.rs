//! One run, from its JetStream message to its final record.
//!
//! [`handle_message`] decodes the message (a malformed one is logged and terminated), claims
//! the run with a compare-and-set QUEUED → INITIALIZING (a run that is no longer QUEUED, e.g.
//! cancelled by the API, is acknowledged and skipped without a span), acknowledges the message
//! (from then on the KV record is the truth), and executes the run inside a `workflow_run`
//! span whose parent is the API's producer span (from the `traceparent` header).
//!
//! Phases, each an INFO `phase` event with `state` on the span, always in the order of
//! [`PHASES`] (the table the book's *Runtime phases* page renders). A run that fails (or is
//! cancelled) before it has a process skips `running` and `parsing`; `updating_db` and
//! `cleanup` always happen. Event messages carry no pids or paths, so the span is the same
//! for every run of the same kind.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use chrono::Utc;
use common::command::{CommandContext, build_argv};
use common::infra::Decision;
use common::{RunId, RunLog, RunRecord, RunRequestMessage, State};
use tokio::sync::mpsc;
use tracing::Instrument;
use tracing::field::Empty;

use crate::control::{RunControl, StopAction};
use crate::outcome::{Exit, StopReason, outcome};
use crate::output::{Captured, LogPublisher, read_lines};
use crate::runtime::Shared;
use crate::{EngineError, RunContext, process, workdir};

/// How long output may keep flowing after the process exited (a grandchild in another
/// process group holding the pipes) before the rest is ignored.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);

/// Decodes a run message; the error is the reason it is malformed.
pub fn decode(payload: &[u8]) -> Result<RunRequestMessage, String> {
    serde_json::from_slice(payload).map_err(|e| e.to_string())
}

enum Claim {
    Claimed(Box<RunRecord>),
    NotQueued(State),
    Missing,
    /// The record asks for another engine (a message on the wrong subject).
    NotForMe(String),
}

/// Handles one message from the runs stream, start to finish.
pub async fn handle_message(shared: Arc<Shared>, msg: jetstream::Message) {
    let req = match decode(&msg.payload) {
        Ok(r) => r,
        Err(reason) => {
            tracing::warn!(subject = %msg.subject, reason = %reason, "discarding malformed run message");
            if let Some(id) = run_id_of(&msg) {
                fail_undecodable(&shared, &id, &reason).await;
            }
            ack(&msg, AckKind::Term).await;
            return;
        }
    };
    let id = req.run_id;
    // In the registry before the claim, so a cancel racing the claim finds the run.
    let Some(control) = shared.registry.insert_new(id) else {
        tracing::info!(run_id = %id, "run is already in flight here; dropping the duplicate message");
        ack(&msg, AckKind::Ack).await;
        return;
    };
    let me = shared.engine_id.clone();
    let spec = &shared.config.engine;
    let claim = shared
        .infra
        .update_run(&id, |rec| match rec {
            None => Decision::Keep(Claim::Missing),
            // The record, not the message, says which engine the run is for.
            Some(r)
                if r.request.workflow_engine != spec.name
                    || r.request.workflow_engine_version != spec.version =>
            {
                Decision::Keep(Claim::NotForMe(format!(
                    "{} {}",
                    r.request.workflow_engine, r.request.workflow_engine_version
                )))
            }
            Some(r) if r.state == State::Queued => {
                r.state = State::Initializing;
                r.engine_id = Some(me.clone());
                Decision::Write(Claim::Claimed(Box::new(r.clone())))
            }
            // Our own earlier claim, whose reply was lost (the message was NAKed and came
            // back); nothing runs it here (the registry said so above), so run it now.
            Some(r)
                if r.state == State::Initializing
                    && r.engine_id.as_deref() == Some(me.as_str()) =>
            {
                Decision::Keep(Claim::Claimed(Box::new(r.clone())))
            }
            Some(r) => Decision::Keep(Claim::NotQueued(r.state)),
        })
        .await;
    let rec = match claim {
        Ok(Claim::Claimed(rec)) => *rec,
        Ok(Claim::NotQueued(state)) => {
            shared.registry.remove(&id);
            ack(&msg, AckKind::Ack).await;
            tracing::info!(run_id = %id, state = %state, "run is no longer queued; skipping");
            return;
        }
        Ok(Claim::NotForMe(engine)) => {
            shared.registry.remove(&id);
            tracing::warn!(run_id = %id, engine = %engine, "discarding a run message for a run of another engine");
            ack(&msg, AckKind::Term).await;
            return;
        }
        Ok(Claim::Missing) => {
            shared.registry.remove(&id);
            tracing::warn!(run_id = %id, reason = "no run record with this id", "discarding malformed run message");
            ack(&msg, AckKind::Term).await;
            return;
        }
        Err(e) => {
            shared.registry.remove(&id);
            let delivered = msg.info().map_or(0, |i| i.delivered);
            if delivered >= crate::runtime::MAX_DELIVER {
                // JetStream would keep the message but never deliver it again: take it out,
                // so the API's reconciler sees a QUEUED run without a message and re-dispatches.
                tracing::warn!(run_id = %id, error = %e, delivered, "failed to claim the run on its last delivery; leaving it to the reconciler");
                ack(&msg, AckKind::Term).await;
            } else {
                tracing::warn!(run_id = %id, error = %e, "failed to claim the run; it will be redelivered");
                ack(&msg, AckKind::Nak(Some(Duration::from_secs(1)))).await;
            }
            return;
        }
    };
    ack(&msg, AckKind::Ack).await;

    let span = workflow_run_span(
        &rec,
        req.trace_id.as_deref(),
        msg.headers.as_ref(),
        shared.sandbox.kind(),
    );
    let run = RunTask {
        shared: shared.clone(),
        rec,
        control,
        span: span.clone(),
        max_output: req.max_output_bytes,
    };
    run.execute().instrument(span).await;
}

/// The run a message is about even when its payload does not decode: the last token of its
/// subject, or a readable `run_id` field.
fn run_id_of(msg: &jetstream::Message) -> Option<RunId> {
    common::nats::run_id_of_subject(&msg.subject).or_else(|| {
        let v: serde_json::Value = serde_json::from_slice(&msg.payload).ok()?;
        v.get("run_id")?.as_str()?.parse().ok()
    })
}

/// A QUEUED run whose message cannot be decoded can never run: SYSTEM_ERROR, with why.
async fn fail_undecodable(shared: &Shared, id: &RunId, reason: &str) {
    let error = format!("the run's message could not be decoded by this engine: {reason}");
    let spec = &shared.config.engine;
    let result = shared
        .infra
        .update_run(id, |rec| match rec {
            // Only a run the record gives to this engine: a message on the wrong subject must
            // not end another engine's run.
            Some(r)
                if r.state == State::Queued
                    && r.request.workflow_engine == spec.name
                    && r.request.workflow_engine_version == spec.version =>
            {
                r.state = State::SystemError;
                r.error = Some(error.clone());
                Decision::Write(true)
            }
            _ => Decision::Keep(false),
        })
        .await;
    match result {
        Ok(true) => {
            tracing::warn!(run_id = %id, "run marked SYSTEM_ERROR: its message does not decode")
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(run_id = %id, error = %e, "failed to mark the run of an undecodable message")
        }
    }
}

/// `argv` as stored in `run_log.cmd`: at most [`common::infra::CMD_LIMIT`] bytes in all, the
/// last stored argument saying how much was left out.
fn bounded_cmd(argv: &[String]) -> Vec<String> {
    let limit = common::infra::CMD_LIMIT;
    let total: usize = argv.iter().map(String::len).sum();
    if total <= limit {
        return argv.to_vec();
    }
    let mut out = Vec::new();
    let mut used = 0;
    for arg in argv {
        if used + arg.len() > limit {
            let mut cut = arg.clone();
            common::infra::truncate_text(&mut cut, (limit - used).max(80));
            out.push(cut);
            out.push(format!(
                "… ({} more arguments, {total} bytes in all, not stored)",
                argv.len() - out.len()
            ));
            break;
        }
        used += arg.len();
        out.push(arg.clone());
    }
    out
}

/// The `workflow_run` span of a claimed run: a child of the context in `headers` (the API's
/// producer span), with `api_trace_id` = the `trace_id` of the message. The parent is set
/// before the span is first entered, as tracing-opentelemetry requires.
pub fn workflow_run_span(
    rec: &RunRecord,
    api_trace_id: Option<&str>,
    headers: Option<&async_nats::HeaderMap>,
    sandbox: crate::sandbox::Kind,
) -> tracing::Span {
    let span = tracing::info_span!(
        "workflow_run",
        otel.kind = "consumer",
        run_id = %rec.run_id,
        user_id = %rec.user_id,
        workflow_type = %rec.request.workflow_type,
        state = Empty,
        duration_ms = Empty,
        api_trace_id = Empty,
        sandbox = sandbox.as_str(),
        "sandbox.pids_max" = Empty,
        "sandbox.memory_max_bytes" = Empty,
        error = Empty,
        otel.status_code = Empty,
    );
    if let Some(api) = api_trace_id {
        span.record("api_trace_id", api);
    }
    telemetry::propagation::set_parent_from(&span, headers);
    span
}

async fn ack(msg: &jetstream::Message, kind: AckKind) {
    if let Err(e) = msg.ack_with(kind).await {
        tracing::warn!(subject = %msg.subject, error = %e, "failed to acknowledge a run message");
    }
}

/// One runtime phase: its `state` on the `phase` event, what it does, and what its failure
/// makes of the run.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    /// The `state` field of its `phase` event.
    pub name: &'static str,
    /// What the engine does in it.
    pub work: &'static str,
    /// What a failure in it makes of the run (Markdown).
    pub on_failure: &'static str,
}

/// Every phase, in the order their events come (the engine emits them through these
/// constants; the book renders this table).
pub const PHASES: [Phase; 7] = [
    Phase {
        name: "initializing",
        work: "create the workdir",
        on_failure: "`SYSTEM_ERROR`",
    },
    Phase {
        name: "building",
        work: "validate the request against this engine's config, build the argv, let `Engine::command` adjust it",
        on_failure: "`SYSTEM_ERROR`",
    },
    Phase {
        name: "executing",
        work: "spawn the process (unless a stop came first), compare-and-set `INITIALIZING` → `RUNNING`",
        on_failure: "`SYSTEM_ERROR`",
    },
    Phase {
        name: "running",
        work: "capture stdout and stderr into `METIS_LOGS`, wait for the exit",
        on_failure: "`SYSTEM_ERROR`",
    },
    Phase {
        name: "parsing",
        work: "exit status and stop requests → the final state",
        on_failure: "—",
    },
    Phase {
        name: "updating_db",
        work: "remove the run's workdir (unless `runs.sandbox.keepWorkdirOnFailure` keeps a failed one), then the final compare-and-set with the run log, after every output line was acknowledged by JetStream",
        on_failure: "logged",
    },
    Phase {
        name: "cleanup",
        work: "drop the in-flight bookkeeping",
        on_failure: "—",
    },
];

/// The phases by name, for the code that emits them.
pub(crate) const INITIALIZING: &str = PHASES[0].name;
pub(crate) const BUILDING: &str = PHASES[1].name;
pub(crate) const EXECUTING: &str = PHASES[2].name;
pub(crate) const RUNNING: &str = PHASES[3].name;
pub(crate) const PARSING: &str = PHASES[4].name;
pub(crate) const UPDATING_DB: &str = PHASES[5].name;
pub(crate) const CLEANUP: &str = PHASES[6].name;

pub(crate) fn phase(state: &'static str) {
    tracing::info!(state, "phase");
}

/// What a run produced before its result is written.
struct Produced {
    /// How the process ended; `None` when none ran.
    exit: Option<Exit>,
    /// Whether every output line was stored (the engine's failure otherwise).
    logs: Result<(), EngineError>,
}

struct RunTask {
    shared: Arc<Shared>,
    rec: RunRecord,
    control: Arc<RunControl>,
    span: tracing::Span,
    /// What is left of the user's output quota (the message's `max_output_bytes`).
    max_output: Option<u64>,
}

impl RunTask {
    fn id(&self) -> RunId {
        self.rec.run_id
    }

    async fn execute(self) {
        let started = Instant::now();
        let sandbox = &self.shared.sandbox;
        let (pids_max, memory_max) = sandbox.limits();
        if pids_max > 0 {
            self.span.record(
                "sandbox.pids_max",
                i64::try_from(pids_max).unwrap_or(i64::MAX),
            );
        }
        if memory_max > 0 {
            self.span.record(
                "sandbox.memory_max_bytes",
                i64::try_from(memory_max).unwrap_or(i64::MAX),
            );
        }
        if sandbox.kind() == crate::sandbox::Kind::None {
            tracing::warn!("{}", crate::sandbox::UNSAFE_WARNING);
        }
        let mut log = RunLog {
            name: format!("run-{}", self.id()),
            ..RunLog::default()
        };
        let runs = &self.shared.config.runs;
        let workdir: PathBuf = workdir::expand(
            &runs.workdir.base,
            &runs.workdir.pattern,
            &self.rec.run_id,
            &self.rec.user_id,
            Utc::now(),
        );
        let produced = self.work(&workdir, &mut log).await;
        log.end_time = Some(Utc::now());

        let (state, error) = match produced {
            Err(e) => (State::SystemError, Some(e.sentence())),
            Ok(Produced { exit, logs }) => {
                if exit.is_some() {
                    phase(PARSING);
                }
                if let Some(exit) = exit {
                    log.exit_code = exit.code;
                    log.signal = exit.signal;
                }
                match (outcome(exit, self.control.stop_reason().as_ref()), logs) {
                    ((State::SystemError, why), _) => (State::SystemError, why),
                    (_, Err(e)) => (State::SystemError, Some(e.sentence())),
                    (result, Ok(())) => result,
                }
            }
        };

        phase(UPDATING_DB);
        if !sandbox.keeps_workdir(state) {
            // What a run leaves behind is nobody's: not a later run's, not the disk's. Removed
            // before the result is written, so a run a client sees ended has no workdir.
            match tokio::fs::remove_dir_all(&workdir).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(parent: None, run_id = %self.id(), path = %workdir.display(), error = %e, "failed to remove the run's workdir")
                }
            }
        }
        // The user's quota counts what this run stored, before the result is visible: a
        // client that sees the run ended sees its usage too (best effort, like every count).
        let stored_bytes = log.output_bytes.unwrap_or(0);
        if stored_bytes > 0 {
            let bytes = i64::try_from(stored_bytes).unwrap_or(i64::MAX);
            if let Err(e) = self
                .shared
                .infra
                .add_usage(&self.rec.user_id, 0, bytes)
                .await
            {
                tracing::warn!(parent: None, run_id = %self.id(), error = %e, "counting the run's output in its user's usage failed");
            }
        }
        let (state, error) = self.finish(state, error, log).await;

        phase(CLEANUP);
        self.shared.registry.remove(&self.id());

        let span = &self.span;
        span.record("state", state.as_str());
        // i64, so OTLP carries an int (tracing-opentelemetry exports u64 as a string).
        span.record(
            "duration_ms",
            i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        );
        if matches!(state, State::ExecutorError | State::SystemError) {
            span.record("error", error.as_deref().unwrap_or(state.as_str()));
            span.record("otel.status_code", "error");
        }
        tracing::info!("workflow run finished");
    }

    /// The phases up to the process's end. `Err` is the engine's own failure.
    async fn work(&self, workdir: &Path, log: &mut RunLog) -> Result<Produced, EngineError> {
        let shared = &self.shared;
        let rec = &self.rec;
        let run_id = rec.run_id.to_string();

        phase(INITIALIZING);
        let runs = &shared.config.runs;
        workdir::create(&runs.workdir.base, workdir).await?;

        phase(BUILDING);
        let validated = common::validate::validate(&rec.request, &shared.config.engine)?;
        let workdir_text = workdir.to_string_lossy();
        let ctx = CommandContext {
            run_id: &run_id,
            user_id: &rec.user_id,
            workflow_url: &validated.workflow_url,
            workdir: &workdir_text,
            engine_args: &validated.engine_args,
            workflow_args: &validated.workflow_args,
        };
        let argv = build_argv(&shared.config.engine.command_template, &ctx)
            .map_err(EngineError::Command)?;
        let argv = shared.engine.command(
            &RunContext {
                run_id: &rec.run_id,
                user_id: &rec.user_id,
                request: &rec.request,
                spec: &shared.config.engine,
                workdir,
                validated: &validated,
            },
            argv,
        )?;
        if argv.is_empty() {
            return Err(EngineError::Command("the command is empty".into()));
        }
        log.cmd = bounded_cmd(&argv);

        phase(EXECUTING);
        if self.control.stop_reason().is_some() {
            // Cancelled (or shutting down) before the process existed: it never starts.
            return Ok(Produced {
                exit: None,
                logs: Ok(()),
            });
        }
        let env = process::workflow_env(workdir, &runs.env).await?;
        // The run's own uid, held until its process is gone; the workdir becomes its alone.
        let identity = shared.sandbox.identity(&run_id);
        shared.sandbox.prepare(&identity, workdir).await?;
        let sandboxed =
            crate::injected::sandbox_argv(shared.sandbox.wrap(&identity, workdir, &argv));
        let (child, pgid) = process::spawn(&sandboxed, workdir, &env)?;
        if crate::injected::active() != Some(crate::injected::Bug::Orphans) {
            shared.keeper.watch(pgid);
        }
        log.start_time = Some(Utc::now());
        let guard = GroupGuard(self.control.clone(), self.shared.clone(), pgid);
        if self.control.started(pgid).is_err() {
            // A stop arrived while spawning.
            process::kill_group(pgid);
        } else {
            self.mark_running(log).await;
        }

        phase(RUNNING);
        // The engine's cap, or what is left of the user's (the API's MAX_LOG_BYTES_PER_USER).
        let (limit, limit_name) = match self.max_output {
            Some(left) if left < shared.max_run_output => (left, "MAX_LOG_BYTES_PER_USER"),
            _ => (shared.max_run_output, "MAX_RUN_OUTPUT_BYTES"),
        };
        let publisher = LogPublisher::new(shared.infra.js.clone(), &rec.run_id, limit, limit_name);
        let (exit, logs) = capture(child, pgid, &self.control, shared, publisher).await?;
        if let Ok(summary) = &logs {
            log.output_lines = Some(summary.lines);
            log.output_bytes = Some(summary.bytes);
            log.output_note.clone_from(&summary.note);
        }
        drop(guard);
        drop(identity);
        Ok(Produced {
            exit: Some(exit),
            logs: logs.map(drop).map_err(EngineError::Logs),
        })
    }

    /// [`common::infra::Infra::update_run`] on this run, retrying a failing write with backoff
    /// (about a minute, 30 attempts) while `keep_trying()` — NATS may be restarting. The
    /// warnings are outside the run's span: whether a retry happens depends on timing.
    async fn update_with_retries<T>(
        &self,
        what: &str,
        keep_trying: impl Fn() -> bool,
        mut decide: impl FnMut(Option<&mut RunRecord>) -> Decision<T>,
    ) -> Result<T, common::infra::InfraError> {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.shared.infra.update_run(&self.id(), &mut decide).await {
                Err(e) if attempt < 30 && keep_trying() => {
                    tracing::warn!(parent: None, run_id = %self.id(), error = %e, attempt, "{what} failed; retrying");
                    tokio::time::sleep(delay).await; // backoff between retries, not synchronisation
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    /// CAS INITIALIZING → RUNNING. A record that says CANCELING (the cancel message may be
    /// lost) stops the process like a cancel; any other change aborts the run.
    async fn mark_running(&self, log: &RunLog) {
        enum Start {
            Running,
            Canceling,
            Changed(State),
            Gone,
        }
        let me = self.shared.engine_id.as_str();
        // NATS may be restarting: retry a failing write rather than abort a process that is
        // running fine. Its output waits in the pipe meanwhile.
        let result = self
            .update_with_retries(
                "marking the run RUNNING",
                || self.control.stop_reason().is_none(),
                |rec| match rec {
                    None => Decision::Keep(Start::Gone),
                    Some(r) if r.engine_id.as_deref() != Some(me) => {
                        Decision::Keep(Start::Changed(r.state))
                    }
                    Some(r) if r.state == State::Initializing => {
                        r.state = State::Running;
                        r.run_log = Some(log.clone());
                        Decision::Write(Start::Running)
                    }
                    // Only this engine moves its run to RUNNING: a retried write whose first
                    // try landed (its reply lost in a leader change) finds its own result.
                    Some(r) if r.state == State::Running => Decision::Keep(Start::Running),
                    Some(r) if matches!(r.state, State::Canceling | State::Canceled) => {
                        Decision::Keep(Start::Canceling)
                    }
                    Some(r) => Decision::Keep(Start::Changed(r.state)),
                },
            )
            .await;
        let abort = match result {
            Ok(Start::Running) => return,
            Ok(Start::Canceling) => {
                // Outside the span: whether this or the cancel message stops the run is a race.
                tracing::info!(parent: None, run_id = %self.id(), "run is canceling; stopping the process");
                if let StopAction::Signal(pgid) = self.control.stop(StopReason::Cancel) {
                    process::terminate_group(pgid, self.shared.cancel_grace, self.control.clone());
                }
                return;
            }
            Ok(Start::Changed(state)) => {
                format!("the run record changed to {state} while the process was starting")
            }
            Ok(Start::Gone) => {
                "the run record disappeared while the process was starting".to_owned()
            }
            Err(e) => EngineError::from(e).sentence(),
        };
        tracing::warn!(reason = %abort, "stopping the run");
        if let StopAction::Signal(pgid) = self.control.stop(StopReason::Abort(abort)) {
            process::kill_group(pgid);
        }
    }

    /// The final CAS. Returns the state and error the record ends with (someone else's, when
    /// the record was already terminal or taken over).
    async fn finish(
        &self,
        state: State,
        error: Option<String>,
        log: RunLog,
    ) -> (State, Option<String>) {
        let me = self.shared.engine_id.as_str();
        // The result must land: a run left non-terminal behind a live engine would never be
        // failed by the API's reaper.
        let result = self
            .update_with_retries(
                "writing the run's result",
                || true,
                |rec| match rec {
                    None => Decision::Keep(None),
                    Some(r) if r.state.is_terminal() || r.engine_id.as_deref() != Some(me) => {
                        Decision::Keep(Some((r.state, r.error.clone())))
                    }
                    Some(r) => {
                        r.state = state;
                        r.error.clone_from(&error);
                        r.run_log = Some(log.clone());
                        Decision::Write(Some((state, r.error.clone())))
                    }
                },
            )
            .await;
        match result {
            Ok(Some((fin, why))) if fin != state || why != error => {
                tracing::warn!(state = %fin, "the run was already ended elsewhere; its record is kept as it is");
                (fin, why)
            }
            Ok(Some(done)) => done,
            Ok(None) => {
                tracing::warn!("the run record disappeared before its result was written");
                (state, error)
            }
            Err(e) => {
                tracing::error!(error = %e, "failed to write the run's result");
                (state, error)
            }
        }
    }
}

/// Kills the run's process group if the run task ends (or is aborted) while it is alive,
/// and releases it from the keeper (the group is gone either way).
struct GroupGuard(Arc<RunControl>, Arc<Shared>, i32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.live_group() {
            process::kill_group(pgid);
        }
        self.1.keeper.release(self.2);
    }
}

/// Captures the output until the process has exited and its pipes are closed; then kills
/// whatever is left of its process group and waits for every line to be stored.
async fn capture(
    mut child: tokio::process::Child,
    pgid: i32,
    control: &RunControl,
    shared: &Shared,
    mut publisher: LogPublisher,
) -> Result<(Exit, Result<crate::output::OutputSummary, String>), EngineError> {
    let keeper = &shared.keeper;
    let (tx, mut rx) = mpsc::channel::<Captured>(256);
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(read_lines(
            out,
            common::LogStream::Stdout,
            tx.clone(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(read_lines(
            err,
            common::LogStream::Stderr,
            tx.clone(),
        )));
    }
    drop(tx);

    let mut exit: Option<Exit> = None;
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            line = rx.recv() => match line {
                Some(c) => publisher.push(c).await,
                None => break,
            },
            status = child.wait(), if exit.is_none() => {
                let status = status.map_err(EngineError::Wait)?;
                control.exited();
                // Nothing a run started outlives it (this also closes pipes held by children).
                process::kill_group(pgid);
                // The group is gone: the keeper must not kill its id, which may be reused.
                keeper.release(pgid);
                exit = Some(shared.sandbox.exit(status));
                drain_until = Some(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
            },
            () = tokio::time::sleep_until(drain_until.unwrap_or_else(tokio::time::Instant::now)), if drain_until.is_some() => {
                tracing::warn!("output pipes stayed open after the process exited; ignoring the rest");
                break;
            },
        }
    }
    for r in readers {
        r.abort();
    }
    let exit = match exit {
        Some(e) => e,
        None => {
            let status = child.wait().await.map_err(EngineError::Wait)?;
            control.exited();
            process::kill_group(pgid);
            keeper.release(pgid);
            shared.sandbox.exit(status)
        }
    };
    Ok((exit, publisher.finish().await))
}

/// Marks a run that is not (or no longer) in flight here as SYSTEM_ERROR because the engine
/// is shutting down, unless it is already terminal or owned by someone else.
pub async fn fail_for_shutdown(shared: &Shared, id: &RunId) {
    let me = shared.engine_id.as_str();
    let result = shared
        .infra
        .update_run(id, |rec| match rec {
            Some(r)
                if !r.state.is_terminal()
                    && r.state != State::Queued
                    && r.engine_id.as_deref() == Some(me) =>
            {
                r.state = State::SystemError;
                r.error = Some(crate::outcome::SHUTDOWN_ERROR.to_owned());
                Decision::Write(true)
            }
            _ => Decision::Keep(false),
        })
        .await;
    match result {
        Ok(true) => {
            tracing::warn!(run_id = %id, "run marked SYSTEM_ERROR: engine shut down before it finished")
        }
        Ok(false) => {}
        Err(e) => {
            tracing::error!(run_id = %id, error = %e, "failed to mark the run SYSTEM_ERROR at shutdown")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_run_joins_the_trace_of_the_message() {
        let (sub, _guard, _) = telemetry::build(telemetry::TelemetryConfig {
            service_name: "t".into(),
            filter: None,
            format: None,
            otlp_endpoint: None,
        });
        tracing::subscriber::with_default(sub, || {
            let req: common::RunRequest = serde_json::from_value(serde_json::json!({
                "workflow_type": "SH", "workflow_type_version": "1", "workflow_url": "x.sh",
                "workflow_engine": "generic", "workflow_engine_version": "1"
            }))
            .unwrap();
            let rec = RunRecord::queued(RunId::new(), "alice".into(), req);
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            );
            let span = workflow_run_span(
                &rec,
                Some("b7ad6b7169203331"),
                Some(&headers),
                crate::sandbox::Kind::Bubblewrap,
            );
            assert_eq!(
                telemetry::propagation::trace_id(&span).as_deref(),
                Some("0af7651916cd43dd8448eb211c80319c")
            );
            let orphan = workflow_run_span(&rec, None, None, crate::sandbox::Kind::Bubblewrap);
            assert_ne!(
                telemetry::propagation::trace_id(&orphan).as_deref(),
                Some("0af7651916cd43dd8448eb211c80319c")
            );
        });
    }

    #[test]
    fn stored_commands_are_bounded() {
        let small: Vec<String> = vec!["sh".into(), "x.sh".into()];
        assert_eq!(bounded_cmd(&small), small);
        let big: Vec<String> = (0..10)
            .map(|i| format!("{i}{}", "x".repeat(5000)))
            .collect();
        let stored = bounded_cmd(&big);
        let bytes: usize = stored.iter().map(String::len).sum();
        assert!(bytes <= common::infra::CMD_LIMIT + 200, "{bytes}");
        assert!(stored.last().unwrap().contains("not stored"), "{stored:?}");
        assert_eq!(stored[0], big[0]);
    }

    #[test]
    fn malformed_messages_are_explained() {
        for (payload, needle) in [
            (&b"not json"[..], "expected"),
            (
                br#"{"run_id":"0190c4c2-6d44-7a8b-9a55-4b2f6e0c8a11"}"#,
                "missing field `request`",
            ),
            (br#"{"run_id":"nope","request":{},"user_id":"u"}"#, "UUID"),
        ] {
            let err = decode(payload).unwrap_err();
            assert!(
                err.contains(needle),
                "{}: {err}",
                String::from_utf8_lossy(payload)
            );
        }
    }
}
