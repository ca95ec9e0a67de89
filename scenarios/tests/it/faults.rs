//! Faults: whatever crashes, a run that got a 200 reaches a terminal state, and the span tree
//! says who ended it. Timings are the stack's short fault settings (`ENGINE_TTL_MS` 1200,
//! heartbeat 200 ms, reaper 200 ms), so each scenario takes seconds.
//!
//! - `engine_killed_mid_run`: SIGKILL during RUNNING → the reaper's `reap_run` ends the run
//!   SYSTEM_ERROR naming the cause; the engine's group keeper kills the workflow's processes.
//! - `engine_paused_past_ttl`: SIGSTOP past the TTL → reaped; on SIGCONT the engine kills the
//!   process and keeps the terminal state the reaper wrote.
//! - `api_killed_during_burst`: 100 concurrent creates, the API SIGKILLed mid-burst and
//!   restarted → every accepted run is terminal, nothing stays QUEUED (the reconciler
//!   re-dispatches what the dead API stored but never published).
//! - `clients_hang_up`: 100 clients that close right after sending → every stored run is
//!   terminal.
//! - `run_message_lost`: a QUEUED run's message is lost → the reconciler's `redispatch_run`
//!   publishes it again and the engine runs it in that trace.
//! - `oversized_request`: a run whose record would not fit `max_payload` → 413 naming the limit,
//!   nothing stored.
//! - `nats_restarted_mid_run`, `nats_frozen`: NATS restarted (data kept) or paused mid-run →
//!   every run completes with all its output; both services reconnect; `/readyz` follows.
//!
//! SIGKILL loses whatever spans a process had not exported, so the burst scenarios pin the
//! tree of a probe run made after the fault (the system works as before) and check the whole
//! history of what clients were told; the others pin the fault's own traces.

use harness::fault::RunProcesses;
use harness::tree::expect;
use serde_json::json;

use crate::support::{
    DEADLINE, check_census, check_tree, check_tree_of, engine_ids, forest_of, run_body, stack,
    wait_for_log,
};

/// A `sleep.sh` run that is RUNNING and has printed its first line, and its processes (found
/// by the PID namespace of its sandbox, which `sleep.sh` writes into its workdir; killed if
/// the scenario fails). Also returns the engine ids to redact.
async fn sleeping_run(s: &harness::Stack) -> anyhow::Result<(String, RunProcesses, Vec<String>)> {
    let run = s.client.create_run(&run_body("sleep.sh")).await?;
    s.client
        .wait_for_state(&run, &["RUNNING"], DEADLINE)
        .await?;
    wait_for_log(s, &run, "stdout: started").await?;
    let processes = harness::fault::run_processes(s, "alice", &run).await?;
    let engines = engine_ids(s).await?;
    Ok((run, processes, engines))
}

/// The `error` of a run, as `GET /runs/{id}` shows it.
async fn run_error(s: &harness::Stack, run: &str) -> anyhow::Result<String> {
    let detail = s.client.get(&format!("/runs/{run}")).await?.body;
    Ok(detail["error"].as_str().unwrap_or_default().to_owned())
}

/// **What it pins.** SIGKILL during RUNNING: the reaper's `reap_run` ends the run SYSTEM_ERROR
/// naming the cause; the workflow's process group is gone.
///
/// **Why it matters.** A crashed engine must not strand its runs: the API's reaper ends them
/// `SYSTEM_ERROR` naming the cause, and the workflow's processes die with the engine.
///
/// **If this changes.** A missing `reap_run` means the run would stay RUNNING forever. Check
/// `ENGINE_TTL_MS` and the reaper before accepting a change to its attributes.
// ANCHOR: engine_killed_mid_run
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_killed_mid_run() -> anyhow::Result<()> {
    stack("engine_killed_mid_run", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                let (run, processes, engines) = sleeping_run(s).await?;

                s.kill_engine(0).await?;
                s.client
                    .wait_for_state(&run, &["SYSTEM_ERROR"], DEADLINE)
                    .await?;
                let error = run_error(s, &run).await?;
                assert!(
                    error.contains("stopped sending heartbeats"),
                    "the error names the cause: {error}"
                );
                // The engine's group keeper killed the workflow (sh and its sleep) with it.
                processes.wait_gone(DEADLINE).await?;

                let forest = check_tree(s, "engine_killed_mid_run", 2, &engines).await?;
                expect::span()
                    .named("reap_run")
                    .in_service("metis-api")
                    .with_attr("state", "SYSTEM_ERROR")
                    .once()
                    .check(&forest)?;
                expect::no_span().named("workflow_run").check(&forest)?;
                // Where the engine's span would hang, the harness's kill stands in for it.
                expect::span()
                    .named("kill engine")
                    .in_service(harness::fault_trace::HARNESS_SERVICE)
                    .with_attr("lost", "engine killed")
                    .child_of(expect::span().named("publish metis.runs.generic.1.SH.1"))
                    .once()
                    .check(&forest)?;
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: engine_killed_mid_run

/// **What it pins.** SIGSTOP past the TTL: reaped; awake, the engine kills the process and keeps
/// the reaper's terminal state (a WARN event on `workflow_run`); cancel is a 409.
///
/// **Why it matters.** An engine that stalls past its TTL is treated as gone; when it wakes it must
/// respect the reaper's verdict instead of overwriting it.
///
/// **If this changes.** If the WARN event on `workflow_run` disappears, the woken engine no longer
/// notices the terminal state; if the state changes from the reaper's, the engine overwrote it.
// ANCHOR: engine_paused_past_ttl
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_paused_past_ttl() -> anyhow::Result<()> {
    stack("engine_paused_past_ttl", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                let (run, processes, engines) = sleeping_run(s).await?;

                s.pause_engine(0).await?;
                s.client
                    .wait_for_state(&run, &["SYSTEM_ERROR"], DEADLINE)
                    .await?;
                s.resume_engine(0).await?;
                // Awake, the engine finds its run ended and kills the process at once.
                s.engines[0]
                    .proc
                    .wait_for_line("the engine to notice its run was ended", DEADLINE, |l| {
                        l.contains("run was ended elsewhere; killing its process")
                            .then_some(())
                    })
                    .await?;
                processes.wait_gone(DEADLINE).await?;
                let cancel = s
                    .client
                    .post(&format!("/runs/{run}/cancel"), &json!({}))
                    .await?;
                assert_eq!(cancel.status, 409, "the run is over: {}", cancel.body);
                let error = run_error(s, &run).await?;
                assert!(
                    error.contains("stopped sending heartbeats"),
                    "the reaper's reason stays: {error}"
                );

                assert_eq!(
                    s.client.state(&run).await?,
                    "SYSTEM_ERROR",
                    "the engine never overwrote the terminal state"
                );
                let forest = check_tree(s, "engine_paused_past_ttl", 3, &engines).await?;
                expect::span()
                    .named("workflow_run")
                    .with_attr("state", "SYSTEM_ERROR")
                    .once()
                    .check(&forest)?;
                expect::span()
                    .named("reap_run")
                    .with_attr("state", "SYSTEM_ERROR")
                    .once()
                    .check(&forest)?;
                // The pause hit the run; its consumer span did arrive, so nothing is lost.
                expect::span()
                    .named("pause engine")
                    .in_service(harness::fault_trace::HARNESS_SERVICE)
                    .without_attr("lost")
                    .once()
                    .check(&forest)?;
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: engine_paused_past_ttl

/// **What it pins.** 100 concurrent creates, the API SIGKILLed mid-burst and restarted: every
/// accepted run COMPLETE, nothing stays QUEUED; the tree is a probe run after the restart.
///
/// **Why it matters.** An API that dies mid-burst may lose requests in flight but never a run it
/// accepted: every 200 ends COMPLETE, nothing stays QUEUED.
///
/// **If this changes.** The tree is a probe run after the restart, so it should equal a plain run;
/// a difference means the restarted API behaves differently from a fresh one.
// ANCHOR: api_killed_during_burst
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_killed_during_burst() -> anyhow::Result<()> {
    stack("api_killed_during_burst", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                let load = s.load();
                let burst = tokio::spawn({
                    let load = load.clone();
                    async move { load.burst(100, &run_body("ok.sh"), false).await }
                });
                test_support::wait_for("20 runs to be accepted", DEADLINE, || async {
                    match load.accepted_so_far() {
                        n if n >= 20 => Ok(()),
                        n => Err(format!("{n} accepted")),
                    }
                })
                .await?;
                s.kill_api().await?;
                let history = burst.await??;
                s.restart_api().await?;

                let states = s.check_history(&history, DEADLINE).await?;
                let accepted = history.accepted();
                assert!(accepted.len() >= 20, "{:?}", history.summary());
                for id in &accepted {
                    assert_eq!(states[id], "COMPLETE", "run {id}");
                }

                // The restarted API works as before: one probe run, pinned.
                let probe = s.client.create_run(&run_body("ok.sh")).await?;
                s.client
                    .wait_for_state(&probe, &["COMPLETE"], DEADLINE)
                    .await?;
                let engines = engine_ids(s).await?;
                check_tree_of(
                    s,
                    "api_killed_during_burst",
                    1,
                    &engines,
                    Some(&[probe.as_str()]),
                )
                .await?;
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: api_killed_during_burst

/// **What it pins.** 100 clients that hang up right after sending: every stored run COMPLETE; the
/// tree is a probe run afterwards.
///
/// **Why it matters.** A client that hangs up right after sending must not cut a run in half: the
/// work after validation runs in its own task.
///
/// **If this changes.** The tree is a probe run afterwards; if it differs from a plain run, the
/// hang-ups left state behind.
// ANCHOR: clients_hang_up
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_hang_up() -> anyhow::Result<()> {
    stack("clients_hang_up", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                let history = s.burst(100, &run_body("ok.sh"), true).await?;
                let states = s.check_history(&history, DEADLINE).await?;
                for (id, state) in &states {
                    assert_eq!(state, "COMPLETE", "stored run {id}");
                }
                let probe = s.client.create_run(&run_body("ok.sh")).await?;
                s.client
                    .wait_for_state(&probe, &["COMPLETE"], DEADLINE)
                    .await?;
                let engines = engine_ids(s).await?;
                check_tree_of(s, "clients_hang_up", 1, &engines, Some(&[probe.as_str()])).await?;
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: clients_hang_up

/// **What it pins.** A QUEUED run whose message is lost: the reconciler's `redispatch_run`
/// publishes it again and the engine's `workflow_run` joins that trace.
///
/// **Why it matters.** A run stored but never published is found by the reconciler and published
/// again; the engine's work joins the reconciler's trace.
///
/// **If this changes.** If `workflow_run` leaves `redispatch_run`'s trace, the reconciler no longer
/// injects context; if `redispatch_run` vanishes, lost messages strand runs.
// ANCHOR: run_message_lost
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_message_lost() -> anyhow::Result<()> {
    stack("run_message_lost", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                // No engine runs while the message is lost, so nothing races the loss.
                s.stop_engine(0).await?;
                let run = s.client.create_run(&run_body("ok.sh")).await?;
                assert_eq!(
                    s.lose_run_messages().await?,
                    1,
                    "the run's message was waiting"
                );
                s.api
                    .as_mut()
                    .expect("api")
                    .proc
                    .wait_for_line("the reconciler to dispatch the run again", DEADLINE, |l| {
                        l.contains("queued run had no message; dispatched again")
                            .then_some(())
                    })
                    .await?;
                s.start_engine().await?;
                s.client
                    .wait_for_state(&run, &["COMPLETE"], DEADLINE)
                    .await?;
                let engines = engine_ids(s).await?;
                let forest = check_tree(s, "run_message_lost", 2, &engines).await?;
                expect::span()
                    .named("workflow_run")
                    .with_attr("state", "COMPLETE")
                    .descendant_of(expect::span().named("redispatch_run"))
                    .once()
                    .check(&forest)?;
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: run_message_lost

/// **What it pins.** A request whose record would not fit `max_payload` is a 413 naming the limit,
/// nothing stored; six 120 KB params run, with a bounded command.
///
/// **Why it matters.** A request that cannot be stored is refused whole with a 413 naming the
/// limit; large but valid parameters still run, with a bounded command line.
///
/// **If this changes.** A changed limit in the 413's `error` is a change of what clients can send;
/// an engine span for the refused request means a partial record was published.
// ANCHOR: oversized_request
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request() -> anyhow::Result<()> {
    stack("oversized_request", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                // Eight 126 KB parameters: under the 1 MiB body limit, over what a record may
                // take once the engine's room is kept.
                let mut body = run_body("args.sh");
                // A URL that does not depend on where the repository is checked out, so the
                // size the 413 names is the same everywhere (it never runs; the fixture engine
                // allows https URLs), as long as the old /srv/workflows/args.sh.
                body["workflow_url"] = json!("https://srv.wf/args.sh");
                let big = "x".repeat(126 * 1024);
                let params: serde_json::Map<String, serde_json::Value> =
                    (0..8).map(|i| (format!("p{i}"), json!(big))).collect();
                body["workflow_params"] = json!(params);
                let r = s.client.post("/runs", &body).await?;
                let msg = r.body["msg"].as_str().unwrap_or_default();
                assert_eq!(r.status, 413, "{}", r.body);
                assert!(
                    msg.contains("max_payload is 1048576 bytes"),
                    "names the limit: {msg}"
                );
                let listed = s.client.get("/runs").await?.body;
                assert_eq!(listed["runs"], json!([]), "nothing stored: {listed}");

                // Six 120 KB parameters fit: the run completes, every line of its output is
                // stored, and its run log keeps a bounded command.
                let mut fits = run_body("args.sh");
                let value = "y".repeat(120 * 1024);
                let params: serde_json::Map<String, serde_json::Value> =
                    (0..6).map(|i| (format!("p{i}"), json!(value))).collect();
                fits["workflow_params"] = json!(params);
                let run = s.client.create_run(&fits).await?;
                s.client
                    .wait_for_state(&run, &["COMPLETE"], DEADLINE)
                    .await?;
                let detail = s.client.get(&format!("/runs/{run}")).await?.body;
                let cmd = detail["run_log"]["cmd"].to_string();
                assert!(cmd.len() < 20 * 1024, "cmd is bounded: {} bytes", cmd.len());
                assert!(
                    cmd.contains("not stored"),
                    "and says so: {}",
                    &cmd[cmd.len().saturating_sub(200)..]
                );
                let printed: usize = s
                    .client
                    .log_lines(&run)
                    .await?
                    .iter()
                    .filter(|l| l.starts_with("stdout: y"))
                    .map(|l| l.len() - "stdout: ".len())
                    .sum();
                assert_eq!(printed, 6 * 120 * 1024, "every byte of output is stored");

                let engines = engine_ids(s).await?;
                let forest = check_tree(s, "oversized_request", 2, &engines).await?;
                expect::span()
                    .named("create_run")
                    .with_attr("user_id", "alice")
                    .times(2)
                    .check(&forest)?;
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: oversized_request

/// Waits until `/readyz` answers `status`.
async fn wait_ready(s: &harness::Stack, status: u16) -> anyhow::Result<()> {
    let client = s.client.clone();
    test_support::wait_for(&format!("/readyz to answer {status}"), DEADLINE, || async {
        match client.get("/readyz").await {
            Ok(r) if r.status == status => Ok(()),
            Ok(r) => Err(format!("{} {}", r.status, r.body)),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await
}

/// Every output line of `args.sh`-style runs: `stdout: <line>` as the client reads them.
async fn log_count(s: &harness::Stack, run: &str) -> anyhow::Result<usize> {
    Ok(s.client.log_lines(run).await?.len())
}

/// **What it pins.** NATS killed and restarted (data kept) with one run RUNNING and others QUEUED:
/// all complete with every line; `/readyz` ready again.
///
/// **Why it matters.** NATS restarting under a running workload is survived: streams and records
/// are kept, both services reconnect, every run completes with every line.
///
/// **If this changes.** A `reap_run` here means the reaper blamed an engine for NATS's outage; a
/// count under ×7 or a second shape in the census means a run was lost or went differently across
/// the restart.
// ANCHOR: nats_restarted_mid_run
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_mid_run() -> anyhow::Result<()> {
    stack("nats_restarted_mid_run", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                let gate = s.gate();
                let mut body = run_body("gated.sh");
                body["workflow_params"] = json!({"gate": gate.display().to_string()});
                let running = s.client.create_run(&body).await?;
                s.client
                    .wait_for_state(&running, &["RUNNING"], DEADLINE)
                    .await?;
                // Three more fill the engine (maxConcurrentRuns 4), two stay QUEUED.
                let mut runs = vec![running.clone()];
                for _ in 0..5 {
                    runs.push(s.client.create_run(&body).await?);
                }
                for run in &runs[..4] {
                    s.client.wait_for_state(run, &["RUNNING"], DEADLINE).await?;
                    wait_for_log(s, run, "stdout: gated: waiting").await?;
                }
                for run in &runs[4..] {
                    assert_eq!(s.client.state(run).await?, "QUEUED", "the engine is full");
                }

                s.restart_nats(true).await?;
                wait_ready(s, 200).await?;
                std::fs::write(&gate, "open")?;
                for run in &runs {
                    s.client
                        .wait_for_state(run, &["COMPLETE"], DEADLINE)
                        .await?;
                }
                let first = log_count(s, &running).await?;
                for run in &runs {
                    assert_eq!(
                        log_count(s, run).await?,
                        first,
                        "every line of {run} is there"
                    );
                }
                let probe = s.client.create_run(&run_body("ok.sh")).await?;
                s.client
                    .wait_for_state(&probe, &["COMPLETE"], DEADLINE)
                    .await?;
                let engines = engine_ids(s).await?;
                // Seven runs, one shape: the census pins the count.
                runs.push(probe);
                let data = check_census(s, "nats_restarted_mid_run", &runs, &engines).await?;
                let forest = forest_of(&data)?;
                expect::span()
                    .named("workflow_run")
                    .with_attr("state", "COMPLETE")
                    .times(7)
                    .check(&forest)?;
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: nats_restarted_mid_run

/// **What it pins.** NATS paused until `/readyz` says not ready: the run completes, nobody reaps
/// it.
///
/// **Why it matters.** A NATS server that stops answering makes the API report not ready, and
/// nobody reaps a healthy run for NATS's stall.
///
/// **If this changes.** A `reap_run` here means the reaper counted NATS's stall against the
/// engine's TTL.
// ANCHOR: nats_frozen
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_frozen() -> anyhow::Result<()> {
    stack("nats_frozen", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                let gate = s.gate();
                let mut body = run_body("gated.sh");
                body["workflow_params"] = json!({"gate": gate.display().to_string()});
                let run = s.client.create_run(&body).await?;
                s.client
                    .wait_for_state(&run, &["RUNNING"], DEADLINE)
                    .await?;

                s.freeze_nats().await?;
                // Frozen until the API notices (its JetStream requests time out): longer than
                // the engine TTL, so the reaper must not count the time it could not see NATS.
                wait_ready(s, 503).await?;
                s.thaw_nats().await?;
                wait_ready(s, 200).await?;
                std::fs::write(&gate, "open")?;
                s.client
                    .wait_for_state(&run, &["COMPLETE"], DEADLINE)
                    .await?;
                let engines = engine_ids(s).await?;
                let forest = check_tree(s, "nats_frozen", 1, &engines).await?;
                expect::no_span().named("reap_run").check(&forest)?;
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: nats_frozen
