//! Runs executed by a real engine: complete, fail, cancel while running, a cancel that beats
//! the process, injection attempts, two engines sharing work, and an engine that dies.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use crate::support::{Stack, body_for};

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_run_completes_and_keeps_every_line() -> anyhow::Result<()> {
    let mut stack = Stack::start("complete").await?;
    stack.start_engine().await?;
    let script = stack.script(
        "ok.sh",
        "echo first\necho to-stderr >&2\nfor i in $(seq 1 300); do echo line $i; done\necho last",
    )?;
    let c = stack.client.clone();
    let run = c.create_run(&body_for(&script)).await?;
    c.wait_for_state(&run, &["COMPLETE"], DEADLINE).await?;

    let detail = c.get(&format!("/runs/{run}")).await?.body;
    assert_eq!(detail["run_log"]["exit_code"], 0, "{detail}");
    assert_eq!(detail["run_log"]["cmd"], json!(["sh", script]), "{detail}");
    assert!(
        detail["run_log"]["start_time"].is_string() && detail["run_log"]["end_time"].is_string(),
        "{detail}"
    );

    let lines = c.log_lines(&run).await?;
    let stdout: Vec<&String> = lines.iter().filter(|l| l.starts_with("stdout: ")).collect();
    assert_eq!(stdout.len(), 302, "every stdout line, none lost");
    assert_eq!(stdout[0], "stdout: first", "the first line is kept");
    assert_eq!(stdout[301], "stdout: last");
    let numbered: Vec<String> = (1..=300).map(|i| format!("stdout: line {i}")).collect();
    assert_eq!(
        stdout[1..301]
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>(),
        numbered,
        "in order"
    );
    assert!(lines.contains(&"stderr: to-stderr".to_owned()), "{lines:?}");
    let only_err = c
        .get(&format!("/runs/{run}/logs?stream=stderr"))
        .await?
        .body;
    assert_eq!(only_err["lines"].as_array().unwrap().len(), 1, "{only_err}");
    let paged = c
        .get(&format!("/runs/{run}/logs?page_size=100"))
        .await?
        .body;
    assert_eq!(paged["lines"].as_array().unwrap().len(), 100);
    assert!(paged["next_page_token"].is_string());
    Ok(())
}

#[tokio::test]
async fn a_failing_run_is_an_executor_error_with_its_exit_code() -> anyhow::Result<()> {
    let mut stack = Stack::start("fail").await?;
    stack.start_engine().await?;
    let script = stack.script("fail.sh", "echo about to fail\nexit 3")?;
    let c = stack.client.clone();
    let run = c.create_run(&body_for(&script)).await?;
    c.wait_for_state(&run, &["EXECUTOR_ERROR"], DEADLINE)
        .await?;
    let detail = c.get(&format!("/runs/{run}")).await?.body;
    assert_eq!(detail["run_log"]["exit_code"], 3, "{detail}");
    assert!(
        detail["error"].as_str().unwrap_or_default().contains('3'),
        "{detail}"
    );
    assert_eq!(c.log_lines(&run).await?, ["stdout: about to fail"]);
    let again = c.post(&format!("/runs/{run}/cancel"), &json!({})).await?;
    assert_eq!(again.status, 409, "{}", again.body);
    Ok(())
}

#[tokio::test]
async fn cancelling_a_running_run_stops_its_process_group() -> anyhow::Result<()> {
    let mut stack = Stack::start("cancel-running").await?;
    stack.start_engine().await?;
    let script = stack.script(
        "sleep.sh",
        "sleep 300 &\necho \"pidns $(readlink /proc/self/ns/pid)\"\necho started\nwait",
    )?;
    let c = stack.client.clone();
    let run = c.create_run(&body_for(&script)).await?;
    c.wait_for_state(&run, &["RUNNING"], DEADLINE).await?;
    test_support::wait_for("the workflow to print 'started'", DEADLINE, || async {
        match c.log_lines(&run).await {
            Ok(l) if l.contains(&"stdout: started".to_owned()) => Ok(()),
            Ok(l) => Err(format!("{l:?}")),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;
    let r = c.post(&format!("/runs/{run}/cancel"), &json!({})).await?;
    assert_eq!(
        (r.status, r.body["state"].clone()),
        (200, json!("CANCELING")),
        "{}",
        r.body
    );
    let ns = c
        .log_lines(&run)
        .await?
        .iter()
        .find_map(|l| l.strip_prefix("stdout: pidns ").map(str::to_owned))
        .unwrap_or_default();
    let processes = test_support::RunProcesses::from_namespace(&ns)?;
    c.wait_for_state(&run, &["CANCELED"], DEADLINE).await?;
    // The workflow's child (the `sleep`) is gone with it.
    processes.wait_gone(DEADLINE).await?;
    Ok(())
}

#[tokio::test]
async fn parameters_reach_the_process_as_single_literal_arguments() -> anyhow::Result<()> {
    let mut stack = Stack::start("injection").await?;
    stack.start_engine().await?;
    let pwned = stack.dir.path().join("pwned");
    let script = stack.script("args.sh", "for a in \"$@\"; do echo \"arg:$a\"; done")?;
    let mut body = body_for(&script);
    body["workflow_params"] =
        json!({"a": format!("x; touch {}", pwned.display()), "b": "$(id)", "c": "`id`"});
    body["workflow_engine_parameters"] = json!({"repeat": 2});
    let c = stack.client.clone();
    let run = c.create_run(&body).await?;
    c.wait_for_state(&run, &["COMPLETE"], DEADLINE).await?;
    let expected = [
        "stdout: arg:--repeat".to_owned(),
        "stdout: arg:2".to_owned(),
        "stdout: arg:--a".to_owned(),
        format!("stdout: arg:x; touch {}", pwned.display()),
        "stdout: arg:--b".to_owned(),
        "stdout: arg:$(id)".to_owned(),
        "stdout: arg:--c".to_owned(),
        "stdout: arg:`id`".to_owned(),
    ];
    assert_eq!(c.log_lines(&run).await?, expected);
    assert!(!pwned.exists(), "a parameter value was run by a shell");
    Ok(())
}

#[tokio::test]
async fn two_engines_share_the_work() -> anyhow::Result<()> {
    let mut stack = Stack::start("two-engines").await?;
    stack.start_engine().await?;
    stack.start_engine().await?;
    // Runs wait on a gate; one engine holds at most 4, so of 8 the other must take some. The
    // gate is in the scripts folder, which sandboxed workflows see (read-only, as a root).
    let gate = stack.scripts_dir().join("gate");
    let script = stack.script(
        "gated.sh",
        &format!(
            "while [ ! -e {} ]; do sleep 0.05; done\necho done",
            gate.display()
        ),
    )?;
    let c = stack.client.clone();
    let mut runs = Vec::new();
    for _ in 0..8 {
        runs.push(c.create_run(&body_for(&script)).await?);
    }
    test_support::wait_for("both engines to own a run in flight", DEADLINE, || async {
        let mut owners = BTreeSet::new();
        for run in &runs {
            let detail = c
                .get(&format!("/runs/{run}"))
                .await
                .map_err(|e| e.to_string())?
                .body;
            owners.extend(detail["engine_id"].as_str().map(str::to_owned));
        }
        if owners.len() == 2 {
            Ok(())
        } else {
            Err(format!("owners so far: {owners:?}"))
        }
    })
    .await?;
    std::fs::write(&gate, "open")?;
    let mut owners = BTreeSet::new();
    for run in &runs {
        c.wait_for_state(run, &["COMPLETE"], DEADLINE).await?;
        owners.extend(
            c.get(&format!("/runs/{run}")).await?.body["engine_id"]
                .as_str()
                .map(str::to_owned),
        );
    }
    assert_eq!(
        owners.len(),
        2,
        "both engines ran some of the 8 runs: {owners:?}"
    );
    let info = c.get("/service-info").await?.body;
    assert_eq!(
        info["engines"][0]["instances"].as_array().map(Vec::len),
        Some(2),
        "{info}"
    );
    Ok(())
}

#[tokio::test]
async fn a_run_whose_engine_dies_becomes_a_system_error() -> anyhow::Result<()> {
    let mut stack = Stack::start("engine-dies").await?;
    stack.start_engine().await?;
    let c = stack.client.clone();
    // Whatever happens, this test leaves no process behind.
    let (run, processes) = long_run(&stack).await?;
    stack.engines[0].proc.kill().await?;
    // The engine's group keeper kills the workflow (sh and its sleep) when the engine dies.
    processes.wait_gone(DEADLINE).await?;
    // Bounded: ENGINE_TTL_MS is 1500 here and the reaper runs every 200 ms.
    c.wait_for_state(&run, &["SYSTEM_ERROR"], DEADLINE).await?;
    let detail = c.get(&format!("/runs/{run}")).await?.body;
    assert!(
        detail["error"]
            .as_str()
            .unwrap_or_default()
            .contains("heartbeat"),
        "{detail}"
    );
    Ok(())
}

#[tokio::test]
async fn an_engine_restart_runs_what_was_queued() -> anyhow::Result<()> {
    let mut stack = Stack::start("engine-restart").await?;
    stack.start_engine().await?;
    let status = stack.engines[0].proc.terminate(DEADLINE).await?;
    assert!(
        status.success(),
        "SIGTERM must end the engine cleanly: {status}"
    );
    let script = stack.script("ok.sh", "echo hello")?;
    let c = stack.client.clone();
    let run = c.create_run(&body_for(&script)).await?;
    assert_eq!(c.state(&run).await?, "QUEUED");
    stack.start_engine().await?;
    c.wait_for_state(&run, &["COMPLETE"], DEADLINE).await?;
    assert_eq!(c.log_lines(&run).await?, ["stdout: hello"]);
    Ok(())
}

#[tokio::test]
async fn a_cancel_for_a_run_whose_engine_died_ends_canceled() -> anyhow::Result<()> {
    let mut stack = Stack::start("engine-dies-cancel").await?;
    stack.start_engine().await?;
    let c = stack.client.clone();
    let (run, processes) = long_run(&stack).await?;
    // Freeze the engine so the cancel message reaches nobody, then let it die.
    stack.engines[0]
        .proc
        .signal(nix::sys::signal::Signal::SIGSTOP)?;
    let r = c
        .post(&format!("/runs/{run}/cancel"), &serde_json::json!({}))
        .await?;
    assert_eq!(r.body["state"], "CANCELING", "{}", r.body);
    stack.engines[0].proc.kill().await?;
    c.wait_for_state(&run, &["CANCELED"], DEADLINE).await?;
    processes.wait_gone(DEADLINE).await?;
    Ok(())
}

#[tokio::test]
async fn a_stored_run_whose_message_was_never_published_is_dispatched() -> anyhow::Result<()> {
    let mut stack = Stack::start("reconcile").await?;
    stack.start_engine().await?;
    let script = stack.script("ok.sh", "echo hello")?;
    // What an API killed between storing and publishing leaves: a QUEUED record, indexed,
    // whose message is nowhere.
    let infra = stack.infra().await?;
    let request: common::RunRequest = serde_json::from_value(body_for(&script))?;
    let id = common::RunId::new();
    let mut rec = common::RunRecord::queued(id, "alice".into(), request);
    rec.subject = Some(common::nats::run_message_subject(
        &common::nats::run_subject("generic", "1", "SH", "1"),
        "alice",
        &id,
    ));
    infra.create_run(&rec).await?;
    let c = stack.client.clone();
    c.wait_for_state(&id.to_string(), &["COMPLETE"], DEADLINE)
        .await?;
    assert_eq!(c.log_lines(&id.to_string()).await?, ["stdout: hello"]);
    let logs = std::fs::read_to_string(&stack.api.proc.log_path)?;
    assert!(
        logs.contains("queued run had no message; dispatched again"),
        "the reconciler says what it did"
    );
    Ok(())
}

#[tokio::test]
async fn a_run_its_live_engine_does_not_know_is_failed() -> anyhow::Result<()> {
    let mut stack = Stack::start("forgotten").await?;
    stack.start_engine().await?;
    let c = stack.client.clone();
    let info = c.get("/service-info").await?.body;
    let engine_id = info["engines"][0]["instances"][0]["id"]
        .as_str()
        .expect("the engine heartbeats")
        .to_owned();
    // What a claim whose reply was lost leaves: INITIALIZING, owned by a live engine that
    // does not run it.
    let script = stack.script("ok.sh", "echo hello")?;
    let request: common::RunRequest = serde_json::from_value(body_for(&script))?;
    let id = common::RunId::new();
    let mut rec = common::RunRecord::queued(id, "alice".into(), request);
    rec.state = common::State::Initializing;
    rec.engine_id = Some(engine_id.clone());
    stack.infra().await?.create_run(&rec).await?;
    c.wait_for_state(&id.to_string(), &["SYSTEM_ERROR"], DEADLINE)
        .await?;
    let detail = c.get(&format!("/runs/{id}")).await?.body;
    let error = detail["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("does not know the run") && error.contains(&engine_id),
        "{detail}"
    );
    // The engine itself is fine: its own runs still complete.
    let run = c.create_run(&body_for(&script)).await?;
    c.wait_for_state(&run, &["COMPLETE"], DEADLINE).await?;
    Ok(())
}

/// A RUNNING run of a script that prints its PID namespace (its sandbox) and sleeps; the
/// guard kills whatever is left in the namespace when dropped.
pub(crate) async fn long_run(
    stack: &Stack,
) -> anyhow::Result<(String, test_support::RunProcesses)> {
    let script = stack.script(
        "long.sh",
        "echo \"pidns $(readlink /proc/self/ns/pid)\"\necho started\nsleep 300",
    )?;
    let run = stack.client.create_run(&body_for(&script)).await?;
    stack
        .client
        .wait_for_state(&run, &["RUNNING"], DEADLINE)
        .await?;
    let ns = test_support::wait_for("the workflow to print its namespace", DEADLINE, || async {
        let lines = stack
            .client
            .log_lines(&run)
            .await
            .map_err(|e| e.to_string())?;
        lines
            .iter()
            .find_map(|l| l.strip_prefix("stdout: pidns "))
            .map(str::to_owned)
            .ok_or_else(|| format!("{lines:?}"))
    })
    .await?;
    Ok((run, test_support::RunProcesses::from_namespace(&ns)?))
}

/// A rolling upgrade: a run an API of an earlier version queued on
/// `metis.runs.<…>.<type_version>.<run_id>` (no user token) is still claimed and run, and the
/// lines an engine of an earlier version stored on `metis.logs.<run_id>` are still read, also
/// one stream at a time.
#[tokio::test]
async fn an_earlier_versions_run_message_and_log_lines_are_still_read() -> anyhow::Result<()> {
    let mut stack = Stack::start("earlier_layout").await?;
    stack.start_engine().await?;
    let script = stack.script("ok.sh", "echo hello")?;
    let infra = stack.infra().await?;
    let request: common::RunRequest = serde_json::from_value(body_for(&script))?;
    let c = stack.client.clone();

    let id = common::RunId::new();
    let subject = format!(
        "{}.{id}",
        common::nats::run_subject("generic", "1", "SH", "1")
    );
    let mut rec = common::RunRecord::queued(id, "alice".into(), request.clone());
    rec.subject = Some(subject.clone());
    infra.create_run(&rec).await?;
    let message = common::RunRequestMessage {
        run_id: id,
        request: request.clone(),
        user_id: "alice".into(),
        trace_id: None,
        max_output_bytes: None,
    };
    infra
        .js
        .publish(subject, serde_json::to_vec(&message)?.into())
        .await?
        .await?;
    c.wait_for_state(&id.to_string(), &["COMPLETE"], DEADLINE)
        .await?;
    assert_eq!(c.log_lines(&id.to_string()).await?, ["stdout: hello"]);

    // A finished run whose lines are in the earlier layout.
    let old = common::RunId::new();
    let mut rec = common::RunRecord::queued(old, "alice".into(), request);
    rec.state = common::State::Complete;
    infra.create_run(&rec).await?;
    for (seq, stream, line) in [
        (0, common::LogStream::Stdout, "out one"),
        (1, common::LogStream::Stderr, "err one"),
        (2, common::LogStream::Stdout, "out two"),
    ] {
        let line = common::LogLine {
            seq,
            stream,
            line: line.to_owned(),
            continues: false,
            time: chrono::Utc::now(),
        };
        infra
            .js
            .publish(
                common::nats::legacy_logs_subject(&old),
                serde_json::to_vec(&line)?.into(),
            )
            .await?
            .await?;
    }
    assert_eq!(
        c.log_lines(&old.to_string()).await?,
        ["stdout: out one", "stderr: err one", "stdout: out two"]
    );
    let only_err = c
        .get(&format!("/runs/{old}/logs?stream=stderr"))
        .await?
        .body;
    assert_eq!(only_err["lines"][0]["line"], "err one", "{only_err}");
    assert_eq!(only_err["lines"].as_array().map(Vec::len), Some(1));
    Ok(())
}

/// `GET /runs?state=<terminal state>` lists the user's runs that ended in it from an index of
/// their own (newest first, paged), never another user's.
#[tokio::test]
async fn listing_by_terminal_state_reads_its_own_index() -> anyhow::Result<()> {
    let mut stack = Stack::start("listing_by_state").await?;
    stack.start_engine().await?;
    let ok = stack.script("ok.sh", "echo ok")?;
    let fail = stack.script("fail.sh", "exit 3")?;
    let alice = stack.client.clone();
    let bob = alice.as_user(Some("bob"));
    let mut complete = Vec::new();
    for _ in 0..3 {
        complete.push(alice.create_run(&body_for(&ok)).await?);
    }
    let failed = alice.create_run(&body_for(&fail)).await?;
    let theirs = bob.create_run(&body_for(&ok)).await?;
    for run in &complete {
        alice.wait_for_state(run, &["COMPLETE"], DEADLINE).await?;
    }
    alice
        .wait_for_state(&failed, &["EXECUTOR_ERROR"], DEADLINE)
        .await?;
    bob.wait_for_state(&theirs, &["COMPLETE"], DEADLINE).await?;

    let ids = |body: &serde_json::Value| -> Vec<String> {
        body["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["run_id"].as_str().map(str::to_owned))
            .collect()
    };
    let page = alice.get("/runs?state=COMPLETE&page_size=2").await?.body;
    assert_eq!(
        ids(&page),
        [complete[2].clone(), complete[1].clone()],
        "{page}"
    );
    let token = page["next_page_token"].as_str().expect("a next page");
    let rest = alice
        .get(&format!(
            "/runs?state=COMPLETE&page_size=2&page_token={token}"
        ))
        .await?
        .body;
    assert_eq!(ids(&rest), [complete[0].clone()], "{rest}");
    assert!(rest.get("next_page_token").is_none(), "{rest}");
    let errors = alice.get("/runs?state=EXECUTOR_ERROR").await?.body;
    assert_eq!(ids(&errors), [failed], "{errors}");
    assert_eq!(ids(&bob.get("/runs?state=COMPLETE").await?.body), [theirs]);
    assert!(ids(&alice.get("/runs?state=CANCELED").await?.body).is_empty());
    Ok(())
}
