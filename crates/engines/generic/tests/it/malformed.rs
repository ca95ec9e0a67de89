//! Malformed run messages are reported and discarded (never redelivered); the engine keeps
//! serving.

use anyhow::Result;
use common::State;
use common::nats::RUNS_STREAM;
use serde_json::json;
use test_support::wait_for;

use crate::support::{Bed, TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_discarded_and_the_engine_keeps_serving() -> Result<()> {
    let bed = Bed::start("malformed").await?;
    let mut engine = bed
        .engine("engine", &bed.config("engine.yaml", |_| {})?)
        .await?;
    let valid_request = serde_json::to_value(bed.request("ok.sh", json!({})))?;
    let bad: Vec<Vec<u8>> = vec![
        b"garbage".to_vec(),
        serde_json::to_vec(&json!({"hello": "world"}))?,
        serde_json::to_vec(
            &json!({"run_id": "not-a-uuid", "request": valid_request, "user_id": "alice"}),
        )?,
        // Well-formed, but no run record has this id.
        serde_json::to_vec(
            &json!({"run_id": "0190c4c2-6d44-7a8b-9a55-4b2f6e0c8a11", "request": valid_request, "user_id": "alice"}),
        )?,
    ];
    let count = bad.len();
    for payload in bad {
        bed.publish_raw(payload).await?;
    }
    let id = bed.submit(bed.request("ok.sh", json!({}))).await?;
    assert_eq!(bed.wait_terminal(id).await?.state, State::Complete);

    let reasons = wait_for("a warning per malformed message", TIMEOUT, || async {
        let reasons: Vec<String> = engine
            .events()
            .iter()
            .filter(|e| e["level"] == "WARN" && e["message"] == "discarding malformed run message")
            .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
            .collect();
        if reasons.len() == count {
            Ok(reasons)
        } else {
            Err(format!("{reasons:?}"))
        }
    })
    .await?;
    // One warning per message, each naming what was wrong with it. The order is not promised:
    // the engine fetches from several consumers (per user, and the shared one) concurrently,
    // so messages published in one order may be discarded in another (CI saw it).
    let mut unmatched = reasons.clone();
    for needle in [
        "expected value",
        "missing field `run_id`",
        "UUID",
        "no run record",
    ] {
        let at = unmatched.iter().position(|r| r.contains(needle));
        assert!(at.is_some(), "a warning should say {needle:?}: {reasons:?}");
        if let Some(at) = at {
            unmatched.remove(at);
        }
    }
    assert!(
        unmatched.is_empty(),
        "warnings nobody expected: {unmatched:?}"
    );

    // Terminated and acked messages leave the work queue: nothing will be redelivered.
    let js = bed.infra.js.clone();
    wait_for("the runs stream to be empty", TIMEOUT, || {
        let js = js.clone();
        async move {
            let mut stream = js
                .get_stream(RUNS_STREAM)
                .await
                .map_err(|e| e.to_string())?;
            let info = stream.info().await.map_err(|e| e.to_string())?;
            if info.state.messages == 0 {
                Ok(())
            } else {
                Err(format!("{} messages", info.state.messages))
            }
        }
    })
    .await?;
    assert!(!engine.proc.has_exited(), "the engine keeps serving");
    engine.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_message_fails_its_run_with_the_reason() -> Result<()> {
    let bed = Bed::start("undecodable").await?;
    let _engine = bed
        .engine("engine", &bed.config("engine.yaml", |_| {})?)
        .await?;
    let id = common::RunId::new();
    bed.infra
        .create_run(&common::RunRecord::queued(
            id,
            crate::support::USER.into(),
            bed.request("ok.sh", json!({})),
        ))
        .await?;
    bed.publish_on(&id.to_string(), b"{\"run_id\": 7}".to_vec())
        .await?;
    let rec = bed.wait_terminal(id).await?;
    assert_eq!(rec.state, State::SystemError, "{rec:?}");
    let error = rec.error.unwrap_or_default();
    assert!(error.contains("could not be decoded"), "{error}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_from_a_newer_api_runs() -> Result<()> {
    let bed = Bed::start("api-ahead").await?;
    let _engine = bed
        .engine("engine", &bed.config("engine.yaml", |_| {})?)
        .await?;
    let id = common::RunId::new();
    let request = bed.request("ok.sh", json!({}));
    bed.infra
        .create_run(&common::RunRecord::queued(
            id,
            crate::support::USER.into(),
            request.clone(),
        ))
        .await?;
    // Fields this engine has never heard of, in the message and in its request.
    let mut request = serde_json::to_value(request)?;
    request["workflow_priority"] = json!("high");
    let message = json!({
        "run_id": id, "request": request, "user_id": crate::support::USER,
        "trace_id": null, "deadline": "2030-01-01T00:00:00Z",
    });
    bed.publish_on(&id.to_string(), serde_json::to_vec(&message)?)
        .await?;
    assert_eq!(bed.wait_terminal(id).await?.state, State::Complete);
    Ok(())
}

/// A run message that never went through the API (published by anyone with NATS access) is
/// validated again by the engine: a host file as the workflow ends the run without starting
/// any process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_rechecks_the_workflow_url() -> Result<()> {
    let bed = Bed::start("recheck-url").await?;
    let mut engine = bed
        .engine("engine", &bed.config("engine.yaml", |_| {})?)
        .await?;
    let mut req = bed.request("ok.sh", json!({}));
    req.workflow_url = "/etc/passwd".into();
    let id = bed.submit(req).await?;
    let rec = bed.wait_terminal(id).await?;
    assert_eq!(rec.state, State::SystemError, "{rec:#?}");
    let error = rec.error.unwrap_or_default();
    assert!(
        error.contains("workflow_url") && error.contains("outside the workflow roots"),
        "{error}"
    );
    assert_eq!(
        bed.logs(id).await?,
        Vec::new(),
        "nothing ran, nothing printed"
    );
    assert!(
        rec.run_log.and_then(|l| l.start_time).is_none(),
        "no process"
    );
    engine.stop().await?;
    Ok(())
}

/// A message on this engine's subject for a run the record gives to another engine (forged, or
/// misrouted) is discarded: the record, not the message, decides; the run stays QUEUED for its
/// own engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_for_another_engines_run_is_discarded() -> Result<()> {
    let bed = Bed::start("other-engine").await?;
    let mut engine = bed
        .engine("engine", &bed.config("engine.yaml", |_| {})?)
        .await?;
    let mut req = bed.request("ok.sh", json!({}));
    req.workflow_engine = "nextflow".into();
    let id = bed.submit(req).await?;
    engine
        .wait_event("the message to be discarded", |e| {
            (e["message"] == "discarding a run message for a run of another engine"
                && crate::support::about(e, &id))
            .then_some(())
        })
        .await?;
    let rec = bed.record(id).await?;
    assert_eq!(rec.state, State::Queued, "{rec:#?}");
    assert_eq!(rec.engine_id, None);
    assert_eq!(bed.logs(id).await?, Vec::new());
    engine.stop().await?;
    Ok(())
}
