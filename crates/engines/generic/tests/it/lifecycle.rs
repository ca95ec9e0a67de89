//! A run from QUEUED to its end: completion, failure, the engine's own failure, and a run
//! queued while no engine runs.

use anyhow::Result;
use common::{LogStream, RunId, State};
use serde_json::{Value, json};

use crate::support::{Bed, Engine, about};

/// The `workflow_run` span (as the JSON log shows it) of the run's finish event.
fn finished(event: &Value, id: &RunId) -> Option<Value> {
    (event["message"] == "workflow run finished" && about(event, id)).then(|| event["span"].clone())
}

/// The `state` of every `phase` event of the run, in order.
fn phases(engine: &Engine, id: &RunId) -> Vec<String> {
    engine
        .events()
        .iter()
        .filter(|e| e["message"] == "phase" && about(e, id))
        .filter_map(|e| e["state"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_completes_with_every_output_line_in_order() -> Result<()> {
    let bed = Bed::start("completes").await?;
    let mut engine = bed
        .engine("engine", &bed.config("engine.yaml", |_| {})?)
        .await?;
    let mut req = bed.request("ok.sh", json!({"who": "world"}));
    req.workflow_engine_parameters = Some([("greeting".to_owned(), json!("hi"))].into());
    let id = bed.submit(req.clone()).await?;

    let rec = bed.wait_terminal(id).await?;
    assert_eq!(rec.state, State::Complete, "{rec:#?}");
    assert_eq!(rec.engine_id.as_deref(), Some(engine.id.as_str()));
    assert_eq!(rec.error, None);
    let log = rec.run_log.expect("run log");
    assert_eq!(log.name, format!("run-{id}"));
    assert_eq!(
        log.cmd,
        [
            "sh",
            req.workflow_url.as_str(),
            "--greeting",
            "hi",
            "--who",
            "world"
        ]
    );
    assert_eq!((log.exit_code, log.signal), (Some(0), None));
    assert!(
        log.start_time.is_some() && log.end_time >= log.start_time,
        "{log:?}"
    );
    assert!(
        !bed.workdir(&id).exists(),
        "the workdir is removed when the run ends"
    );

    let lines = bed.logs(id).await?;
    let seqs: Vec<u64> = lines.iter().map(|l| l.seq).collect();
    assert_eq!(
        seqs,
        (0..lines.len() as u64).collect::<Vec<_>>(),
        "one combined seq from 0, in stream order"
    );
    let of = |s: LogStream| {
        lines
            .iter()
            .filter(|l| l.stream == s)
            .map(|l| l.line.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of(LogStream::Stdout),
        [
            "ok: starting",
            "ok: working",
            "arg: --greeting",
            "arg: hi",
            "arg: --who",
            "arg: world"
        ]
    );
    assert_eq!(
        of(LogStream::Stderr),
        ["ok: a warning on stderr", "ok: done"]
    );

    // The span's phase events, in order, then the finish event.
    let span = engine
        .wait_event("workflow run finished", |e| finished(e, &id))
        .await?;
    assert_eq!(span["name"], "workflow_run");
    assert_eq!(span["state"], "COMPLETE");
    assert_eq!(
        span["api_trace_id"], "b7ad6b7169203331",
        "the message's trace_id"
    );
    assert_eq!(
        (span["user_id"].as_str(), span["workflow_type"].as_str()),
        (Some("alice"), Some("SH"))
    );
    assert!(
        span["duration_ms"].is_u64() && span.get("error").is_none(),
        "{span}"
    );
    assert_eq!(phases(&engine, &id), engine::run::PHASES.map(|p| p.name));
    engine.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_process_is_an_executor_error_with_its_exit_code() -> Result<()> {
    let bed = Bed::start("fails").await?;
    let mut engine = bed
        .engine("engine", &bed.config("engine.yaml", |_| {})?)
        .await?;
    let id = bed.submit(bed.request("fail.sh", json!({}))).await?;

    let rec = bed.wait_terminal(id).await?;
    assert_eq!(rec.state, State::ExecutorError, "{rec:#?}");
    assert_eq!(rec.error.as_deref(), Some("process exited with status 3"));
    let log = rec.run_log.expect("run log");
    assert_eq!((log.exit_code, log.signal), (Some(3), None));
    let lines: Vec<String> = bed.logs(id).await?.into_iter().map(|l| l.line).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines.contains(&"fail: starting".to_owned())
            && lines.contains(&"fail: something went wrong".to_owned())
    );
    let span = engine
        .wait_event("workflow run finished", |e| finished(e, &id))
        .await?;
    assert_eq!(
        (span["state"].as_str(), span["error"].as_str()),
        (Some("EXECUTOR_ERROR"), Some("process exited with status 3"))
    );
    assert_eq!(span["otel.status_code"], "error");
    engine.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_request_is_a_system_error_and_nothing_runs() -> Result<()> {
    // The API validated against the registered config; this engine's own file is stricter.
    let bed = Bed::start("system-error").await?;
    let mut engine = bed
        .engine("engine", &bed.config("engine.yaml", |_| {})?)
        .await?;
    let mut req = bed.request("ok.sh", json!({}));
    req.workflow_engine_parameters = Some([("greeting".to_owned(), json!("bonjour"))].into());
    let id = bed.submit(req).await?;

    let rec = bed.wait_terminal(id).await?;
    assert_eq!(rec.state, State::SystemError, "{rec:#?}");
    let error = rec.error.unwrap_or_default();
    assert!(
        error.starts_with("failed to validate")
            && error.contains("workflow_engine_parameters.greeting"),
        "{error}"
    );
    assert!(bed.logs(id).await?.is_empty(), "no process ran");
    let span = engine
        .wait_event("workflow run finished", |e| finished(e, &id))
        .await?;
    assert_eq!(span["state"], "SYSTEM_ERROR");
    assert_eq!(span["error"].as_str(), Some(error.as_str()));
    assert_eq!(span["otel.status_code"], "error");
    assert_eq!(
        phases(&engine, &id),
        ["initializing", "building", "updating_db", "cleanup"]
    );
    engine.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_queued_while_no_engine_runs_executes_once_one_starts() -> Result<()> {
    let bed = Bed::start("queued-first").await?;
    let config = bed.config("engine.yaml", |_| {})?;
    let id = bed.submit(bed.request("ok.sh", json!({}))).await?;
    assert_eq!(bed.record(id).await?.state, State::Queued);

    let mut engine = bed.engine("engine", &config).await?;
    let rec = bed.wait_terminal(id).await?;
    assert_eq!(rec.state, State::Complete, "{rec:#?}");
    assert_eq!(rec.engine_id.as_deref(), Some(engine.id.as_str()));
    engine.stop().await?;
    Ok(())
}
