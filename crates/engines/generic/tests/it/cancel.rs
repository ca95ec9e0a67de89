//! Cancel: a running process group is stopped (SIGTERM, then SIGKILL after the grace period),
//! a run cancelled before it starts never starts, and cancels for runs not in flight.

use anyhow::Result;
use common::{CancelMessage, RunId, RunRecord, State};
use futures::StreamExt;
use serde_json::json;

use crate::support::{Bed, TIMEOUT, USER, about, wait_gone};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_run_stops_its_process_group() -> Result<()> {
    let bed = Bed::start("cancel-running").await?;
    let mut engine = bed
        .engine("engine", &bed.config("engine.yaml", |_| {})?)
        .await?;
    let id = bed.submit(bed.request("sleep.sh", json!({}))).await?;
    bed.wait_state(id, "RUNNING", |s| s == State::Running)
        .await?;
    let run = bed.processes_of(id).await?;

    bed.cancel(id).await?;
    let rec = bed.wait_terminal(id).await?;
    assert_eq!(rec.state, State::Canceled, "{rec:#?}");
    assert_eq!(rec.error, None);
    let log = rec.run_log.expect("run log");
    assert_eq!(
        (log.exit_code, log.signal),
        (None, Some(15)),
        "ended by the SIGTERM"
    );
    wait_gone(&run).await?;
    let lines: Vec<String> = bed.logs(id).await?.into_iter().map(|l| l.line).collect();
    assert_eq!(lines, ["started"]);
    engine
        .wait_event("the cancel to be carried out", |e| {
            (e["message"] == "sent SIGTERM to the run's process group"
                && e["span"]["name"] == "workflow_cancel"
                && about(e, &id))
            .then_some(())
        })
        .await?;
    let state = engine
        .wait_event("the run to finish", |e| {
            (e["message"] == "workflow run finished" && about(e, &id))
                .then(|| e["span"]["state"].clone())
        })
        .await?;
    assert_eq!(state, "CANCELED");
    engine.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_ignores_sigterm_is_killed_after_the_grace_period() -> Result<()> {
    let bed = Bed::start("cancel-stubborn").await?;
    let mut engine = bed
        .engine(
            "engine",
            &bed.config("engine.yaml", |c| c.runs.cancel_grace_period_ms = 300)?,
        )
        .await?;
    let id = bed.submit(bed.request("stubborn.sh", json!({}))).await?;
    bed.wait_state(id, "RUNNING", |s| s == State::Running)
        .await?;
    let run = bed.processes_of(id).await?;

    bed.cancel(id).await?;
    let rec = bed.wait_terminal(id).await?;
    assert_eq!(rec.state, State::Canceled, "{rec:#?}");
    assert_eq!(
        rec.run_log.expect("run log").signal,
        Some(9),
        "ended by the SIGKILL"
    );
    wait_gone(&run).await?;
    engine.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cancelled_before_its_message_is_consumed_never_starts() -> Result<()> {
    let bed = Bed::start("cancel-queued").await?;
    let mut engine = bed
        .engine("engine", &bed.config("engine.yaml", |_| {})?)
        .await?;
    let req = bed.request("ok.sh", json!({}));
    let id = RunId::new();
    let mut rec = RunRecord::queued(id, USER.into(), req.clone());
    rec.state = State::Canceled; // what the API's QUEUED → CANCELED leaves behind
    bed.infra.create_run(&rec).await?;
    let mut watch = bed.infra.runs.watch_with_history(id.to_string()).await?;

    bed.publish(id, req).await?;
    engine
        .wait_event("the skip", |e| {
            (e["message"] == "run is no longer queued; skipping" && about(e, &id)).then_some(())
        })
        .await?;

    // Every write the record ever saw, up to its current revision: only CANCELED.
    let (now, revision) = bed.infra.get_run(&id).await?.expect("record");
    assert_eq!((now.state, now.engine_id), (State::Canceled, None));
    let mut states = Vec::new();
    loop {
        let entry = tokio::time::timeout(TIMEOUT, watch.next())
            .await?
            .expect("watch open")?;
        states.push(serde_json::from_slice::<RunRecord>(&entry.value)?.state);
        if entry.revision >= revision {
            break;
        }
    }
    assert_eq!(states, [State::Canceled]);
    assert!(
        !engine
            .events()
            .iter()
            .any(|e| e["message"] == "phase" && about(e, &id)),
        "no workflow_run span for a skipped run"
    );
    assert!(!bed.workdir(&id).exists(), "nothing was prepared");
    engine.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_for_runs_not_in_flight_here() -> Result<()> {
    let bed = Bed::start("cancel-elsewhere").await?;
    let mut engine = bed
        .engine("engine", &bed.config("engine.yaml", |_| {})?)
        .await?;

    // A run this engine owns on record but does not run (e.g. lost across a restart).
    let orphan = RunId::new();
    let mut rec = RunRecord::queued(orphan, USER.into(), bed.request("ok.sh", json!({})));
    rec.state = State::Canceling;
    rec.engine_id = Some(engine.id.clone());
    bed.infra.create_run(&rec).await?;
    bed.send_cancel(
        &engine.id,
        serde_json::to_vec(&CancelMessage { run_id: orphan })?,
    )
    .await?;
    assert_eq!(bed.wait_terminal(orphan).await?.state, State::Canceled);

    // A run owned by another engine is left alone.
    let other = RunId::new();
    let mut rec = RunRecord::queued(other, USER.into(), bed.request("ok.sh", json!({})));
    rec.state = State::Canceling;
    rec.engine_id = Some("another-engine".into());
    bed.infra.create_run(&rec).await?;
    bed.send_cancel(&engine.id, br#"not json"#.to_vec()).await?;
    bed.send_cancel(
        &engine.id,
        serde_json::to_vec(&CancelMessage { run_id: other })?,
    )
    .await?;
    engine
        .wait_event("the refusal", |e| {
            (e["message"] == "run is not running on this engine" && about(e, &other)).then_some(())
        })
        .await?;
    assert_eq!(bed.record(other).await?.state, State::Canceling);
    assert!(
        engine
            .events()
            .iter()
            .any(|e| e["level"] == "WARN" && e["message"] == "discarding malformed cancel message"),
        "the malformed cancel was reported"
    );

    // A run cancelled while still INITIALIZING on record (its message not consumed yet by a
    // stopped engine) also ends: the record decides.
    let stale = RunId::new();
    let mut rec = RunRecord::queued(stale, USER.into(), bed.request("ok.sh", json!({})));
    rec.state = State::Initializing;
    rec.engine_id = Some(engine.id.clone());
    bed.infra.create_run(&rec).await?;
    bed.cancel(stale).await?;
    assert_eq!(bed.wait_terminal(stale).await?.state, State::Canceled);
    engine.stop().await?;
    Ok(())
}
