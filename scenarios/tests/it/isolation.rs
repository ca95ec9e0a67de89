//! Isolation, tried the way a hostile tenant would: every run is a sandbox (the engine's
//! `sandbox` module: bubblewrap namespaces, a uid of its own, limits), so nothing a workflow
//! starts outlives its run and no run can touch another's files, processes or the engine.
//!
//! - `daemon_after_complete`, `daemon_after_cancel`, `daemon_after_engine_kill`: the fixture
//!   `hostile.sh --daemon MARKER` leaves a `setsid` daemon, a double fork and a `nohup` behind;
//!   once the run is COMPLETE, CANCELED, or reaped after its engine was SIGKILLed, no process on
//!   the host carries the marker and none is left in the run's PID namespace.
//! - `tenants_cannot_touch_each_other`: alice's workflow tries to list, read and write bob's
//!   running workdir, SIGKILLs every process it can see and reads every environment in `/proc`;
//!   it gets nothing, and bob's run completes untouched.
//!
//! Each checks the outcome as a user sees it (states and log lines over HTTP) and the host's
//! process table, and pins the span tree, whose `workflow_run` names the sandbox and its limits.

use std::time::Duration;

use harness::fault::{RunProcesses, processes_marked};
use harness::tree::expect;
use serde_json::json;

use crate::support::{DEADLINE, check_tree, engine_ids, run_body, stack, wait_for_log};

/// A marker no other process on the host carries.
fn marker(scenario: &str) -> String {
    format!("metis-escapee-{scenario}-{}", std::process::id())
}

/// A `hostile.sh` request with `params`.
fn hostile(params: serde_json::Value) -> serde_json::Value {
    let mut body = run_body("hostile.sh");
    body["workflow_params"] = params;
    body
}

/// The run's processes, by the PID namespace it printed first.
async fn processes_of(s: &harness::Stack, run: &str) -> anyhow::Result<RunProcesses> {
    let ns = test_support::wait_for("the workflow to print its namespace", DEADLINE, || async {
        let lines = s.client.log_lines(run).await.map_err(|e| e.to_string())?;
        lines
            .iter()
            .find_map(|l| l.strip_prefix("stdout: pidns ").map(str::to_owned))
            .ok_or_else(|| format!("{lines:?}"))
    })
    .await?;
    RunProcesses::from_namespace(&ns)
}

/// A RUNNING `hostile.sh --daemon MARKER --wait` run whose escapees have started, and its
/// processes.
async fn running_daemons(s: &harness::Stack, mark: &str) -> anyhow::Result<(String, RunProcesses)> {
    let run = s
        .client
        .create_run(&hostile(json!({"daemon": mark, "wait": true})))
        .await?;
    s.client
        .wait_for_state(&run, &["RUNNING"], DEADLINE)
        .await?;
    wait_for_log(s, &run, "stdout: waiting").await?;
    let processes = processes_of(s, &run).await?;
    Ok((run, processes))
}

/// Waits until no process on the host carries `marker` and none is left in the sandbox.
async fn nothing_survives(run: &RunProcesses, marker: &str) -> anyhow::Result<()> {
    test_support::wait_for(
        &format!("every process marked {marker} to be gone"),
        DEADLINE,
        || async {
            let left = processes_marked(marker);
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("still alive: {left:?}"))
            }
        },
    )
    .await?;
    run.wait_gone(DEADLINE).await
}

/// **What it pins.** A workflow that leaves a `setsid` daemon, a double fork and a `nohup` behind
/// ends `COMPLETE` and none of them survives (host process table, the run's PID namespace);
/// `workflow_run` carries `sandbox=bubblewrap` and its limits.
///
/// **Why it matters.** A workflow that detaches (`setsid`, a double fork, `nohup`) must not leave
/// a daemon running after its run is COMPLETE: the run's PID namespace dies with its main
/// process, whatever reparented itself.
///
/// **If this changes.** A missing `sandbox=bubblewrap` on `workflow_run` means the run was not
/// sandboxed; a state other than COMPLETE means the sandbox broke the workflow.
// ANCHOR: daemon_after_complete
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_after_complete() -> anyhow::Result<()> {
    stack("daemon_after_complete", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                let mark = marker("complete");
                let run = s
                    .client
                    .create_run(&hostile(json!({"daemon": mark})))
                    .await?;
                s.client
                    .wait_for_state(&run, &["COMPLETE"], DEADLINE)
                    .await?;
                let lines = s.client.log_lines(&run).await?;
                assert!(
                    lines.contains(&"stdout: daemons started".to_owned()),
                    "{lines:?}"
                );
                let processes = processes_of(s, &run).await?;
                nothing_survives(&processes, &mark).await?;
                let engines = engine_ids(s).await?;
                let forest = check_tree(s, "daemon_after_complete", 1, &engines).await?;
                expect::span()
                    .named("workflow_run")
                    .with_attr("sandbox", "bubblewrap")
                    .with_attr("state", "COMPLETE")
                    .once()
                    .check(&forest)?;
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: daemon_after_complete

/// **What it pins.** The same escapees, cancelled while running: `CANCELED`, nothing survives.
///
/// **Why it matters.** Cancelling a run ends all of it: SIGTERM reaches every process in the
/// run's sandbox (with the grace period), and the sandbox's end takes whatever detached.
///
/// **If this changes.** A state other than CANCELED, or a surviving marked process, means a cancel
/// no longer reaches the whole sandbox.
// ANCHOR: daemon_after_cancel
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_after_cancel() -> anyhow::Result<()> {
    stack("daemon_after_cancel", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                let mark = marker("cancel");
                let (run, processes) = running_daemons(s, &mark).await?;
                // The escapees' own names end `-setsid`, `-doublefork`, `-nohup` (the double
                // fork's short-lived middle process may carry the name a moment too).
                test_support::wait_for("the three escapees to run", DEADLINE, || async {
                    let seen = processes_marked(&format!("{mark}-"));
                    let all = ["-setsid", "-doublefork", "-nohup"]
                        .iter()
                        .all(|k| seen.iter().any(|p| p.ends_with(&format!("{mark}{k}"))));
                    if all {
                        Ok(())
                    } else {
                        Err(format!("{seen:?}"))
                    }
                })
                .await?;
                let r = s
                    .client
                    .post(&format!("/runs/{run}/cancel"), &json!({}))
                    .await?;
                assert_eq!(r.status, 200, "{}", r.body);
                s.client
                    .wait_for_state(&run, &["CANCELED"], DEADLINE)
                    .await?;
                nothing_survives(&processes, &mark).await?;
                let engines = engine_ids(s).await?;
                check_tree(s, "daemon_after_cancel", 2, &engines).await?;
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: daemon_after_cancel

/// **What it pins.** The same escapees, their engine SIGKILLed: nothing survives, the reaper's
/// `reap_run` ends the run `SYSTEM_ERROR`.
///
/// **Why it matters.** An engine that is SIGKILLed cannot clean up; its runs' sandboxes must die
/// with it anyway (bubblewrap's `--die-with-parent` and the group keeper, neither visible to a
/// workflow), and the reaper ends the run SYSTEM_ERROR.
///
/// **If this changes.** A surviving marked process means a workflow outlived its engine; a missing
/// `reap_run` means the run would stay RUNNING.
// ANCHOR: daemon_after_engine_kill
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_after_engine_kill() -> anyhow::Result<()> {
    stack("daemon_after_engine_kill", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                let mark = marker("engine-kill");
                let (run, processes) = running_daemons(s, &mark).await?;
                let engines = engine_ids(s).await?;
                s.kill_engine(0).await?;
                nothing_survives(&processes, &mark).await?;
                s.client
                    .wait_for_state(&run, &["SYSTEM_ERROR"], DEADLINE)
                    .await?;
                let forest = check_tree(s, "daemon_after_engine_kill", 2, &engines).await?;
                expect::span()
                    .named("reap_run")
                    .in_service("metis-api")
                    .with_attr("state", "SYSTEM_ERROR")
                    .once()
                    .check(&forest)?;
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: daemon_after_engine_kill

/// **What it pins.** Alice's workflow cannot list, read or write bob's running workdir, signal his
/// processes or read the engine's environment; each run has its own uid; bob's run completes
/// untouched.
///
/// **Why it matters.** Users run code on shared engines: one user's workflow must not read, list
/// or write another's workdir, signal its processes, or read the engine's credentials. Each run
/// has its own mount and PID namespaces and its own uid.
///
/// **If this changes.** Bob's run ending other than COMPLETE means alice's workflow reached it; a
/// `snoop:` line that claims success is an isolation bug, whatever the tree says.
// ANCHOR: tenants_cannot_touch_each_other
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_cannot_touch_each_other() -> anyhow::Result<()> {
    stack("tenants_cannot_touch_each_other", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                let bob = s.client.as_user(Some("bob"));
                let gate = s.gate();
                let victim = bob
                    .create_run(&hostile(
                        json!({"secret": true, "gate": gate.display().to_string()}),
                    ))
                    .await?;
                bob.wait_for_state(&victim, &["RUNNING"], DEADLINE).await?;
                test_support::wait_for("bob's run to write its secret", DEADLINE, || async {
                    let lines = bob.log_lines(&victim).await.map_err(|e| e.to_string())?;
                    if lines.contains(&"stdout: secret written".to_owned()) {
                        Ok(())
                    } else {
                        Err(format!("{lines:?}"))
                    }
                })
                .await?;
                let bob_dir = s.dir.join("runs").join("bob").join(&victim);
                assert!(
                    bob_dir.join("secret").is_file(),
                    "bob's secret is on the host"
                );

                let attack = s
                    .client
                    .create_run(&hostile(json!({"snoop": bob_dir.display().to_string()})))
                    .await?;
                s.client
                    .wait_for_state(&attack, &["COMPLETE"], DEADLINE)
                    .await?;
                let lines = s.client.log_lines(&attack).await?;
                for expected in [
                    "stdout: snoop: cannot list the other run's workdir",
                    "stdout: snoop: cannot read the other run's secret",
                    "stdout: snoop: cannot write into the other run's workdir",
                    "stdout: snoop: killed 0 processes of others",
                    "stdout: snoop: no NATS credentials in any visible environment",
                ] {
                    assert!(
                        lines.contains(&expected.to_owned()),
                        "{expected} in {lines:?}"
                    );
                }
                assert!(!lines.iter().any(|l| l.contains("top secret")), "{lines:?}");
                assert!(!bob_dir.join("planted").exists());
                let uid = |lines: &[String]| {
                    lines
                        .iter()
                        .find_map(|l| l.strip_prefix("stdout: uid ").map(str::to_owned))
                };
                let bob_lines = bob.log_lines(&victim).await?;
                assert_ne!(
                    uid(&lines),
                    uid(&bob_lines),
                    "each run has a uid of its own"
                );
                assert_ne!(uid(&lines).as_deref(), Some("0"), "never root");

                // Bob's run was not touched: it completes once the gate opens.
                std::fs::write(&gate, "open")?;
                bob.wait_for_state(&victim, &["COMPLETE"], DEADLINE).await?;
                test_support::wait_for(
                    "bob's workdir to be removed",
                    Duration::from_secs(10),
                    || async {
                        if bob_dir.exists() {
                            Err(format!("{} still there", bob_dir.display()))
                        } else {
                            Ok(())
                        }
                    },
                )
                .await?;
                let engines = engine_ids(s).await?;
                check_tree(s, "tenants_cannot_touch_each_other", 2, &engines).await?;
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: tenants_cannot_touch_each_other
