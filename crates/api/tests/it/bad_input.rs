//! Every bad input is a 4xx whose `msg` names what was wrong, and nothing is stored or
//! published.

use serde_json::{Value, json};

use crate::support::{Stack, run_body};

#[track_caller]
fn check(what: &str, reply: &test_support::metis::Reply, status: u16, needles: &[&str]) {
    let msg = reply.body["msg"].as_str().unwrap_or_default();
    assert_eq!(
        reply.status, status,
        "{what}: expected {status}, got {} {}",
        reply.status, reply.body
    );
    assert_eq!(
        reply.body["status_code"],
        json!(status),
        "{what}: status_code in body {}",
        reply.body
    );
    for n in needles {
        assert!(
            msg.contains(n),
            "{what}: expected msg to mention '{n}', got '{msg}'"
        );
    }
}

#[tokio::test]
async fn bad_requests_are_4xx_naming_the_problem_and_store_nothing() -> anyhow::Result<()> {
    let stack = Stack::start("bad-input").await?;
    stack.register_config_only().await?;
    let c = &stack.client;

    let r = c
        .post_raw("/runs", "application/json", b"{not json".to_vec())
        .await?;
    check("malformed JSON", &r, 400, &["malformed JSON"]);
    let r = c.post_raw("/runs", "text/plain", b"{}".to_vec()).await?;
    check("no JSON content type", &r, 415, &["application/json"]);

    let mut missing = run_body("ok.sh");
    missing.as_object_mut().unwrap().remove("workflow_url");
    check(
        "missing field",
        &c.post("/runs", &missing).await?,
        400,
        &["workflow_url"],
    );

    let mut wrong = run_body("ok.sh");
    wrong["workflow_params"] = json!("not an object");
    check(
        "wrong type",
        &c.post("/runs", &wrong).await?,
        400,
        &["workflow_params"],
    );

    let mut unknown_field = run_body("ok.sh");
    unknown_field["workflow_paramz"] = json!({});
    check(
        "unknown field",
        &c.post("/runs", &unknown_field).await?,
        400,
        &["workflow_paramz"],
    );

    let mut engine = run_body("ok.sh");
    engine["workflow_engine"] = json!("nextflow");
    check(
        "unknown engine",
        &c.post("/runs", &engine).await?,
        400,
        &["workflow_engine", "nextflow", "generic 1"],
    );

    let mut version = run_body("ok.sh");
    version["workflow_engine_version"] = json!("9");
    check(
        "unknown engine version",
        &c.post("/runs", &version).await?,
        400,
        &["version '9'"],
    );

    let mut wtype = run_body("ok.sh");
    wtype["workflow_type"] = json!("CWL");
    check(
        "unsupported workflow type",
        &c.post("/runs", &wtype).await?,
        400,
        &["workflow_type", "CWL"],
    );

    let params = |p: Value| {
        let mut b = run_body("ok.sh");
        b["workflow_engine_parameters"] = p;
        b
    };
    check(
        "denied param",
        &c.post("/runs", &params(json!({"exec": "rm -rf /"})))
            .await?,
        400,
        &["workflow_engine_parameters.exec", "denied"],
    );
    check(
        "invalid param",
        &c.post("/runs", &params(json!({"repeat": 11}))).await?,
        400,
        &["workflow_engine_parameters.repeat", "maximum"],
    );
    check(
        "mistyped param",
        &c.post("/runs", &params(json!({"repeat": "lots"}))).await?,
        400,
        &["repeat", "integer"],
    );
    check(
        "unknown param",
        &c.post("/runs", &params(json!({"colour": "red"}))).await?,
        400,
        &["workflow_engine_parameters.colour", "unknown"],
    );

    let mut big = run_body("ok.sh");
    big["tags"] = json!({"padding": "x".repeat(1024 * 1024 + 10)});
    check(
        "body over 1 MiB",
        &c.post("/runs", &big).await?,
        413,
        &["larger than"],
    );

    check(
        "a token whose sub is not a valid user id",
        &c.as_user(Some("../etc"))
            .post("/runs", &run_body("ok.sh"))
            .await?,
        401,
        &["sub", "valid user id"],
    );

    check("unknown route", &c.get("/nope").await?, 404, &["/nope"]);
    check(
        "wrong method",
        &c.post("/service-info", &json!({})).await?,
        405,
        &["POST"],
    );
    check(
        "unknown run",
        &c.get("/runs/0190b6a4-0000-7000-8000-000000000000").await?,
        404,
        &["run not found"],
    );
    check(
        "not a run id",
        &c.get("/runs/abc/status").await?,
        404,
        &["run not found: abc"],
    );
    check(
        "bad page size",
        &c.get("/runs?page_size=0").await?,
        400,
        &["page_size"],
    );
    check(
        "bad state filter",
        &c.get("/runs?state=DONE").await?,
        400,
        &["state", "DONE"],
    );

    let listed = c.get("/runs").await?;
    assert_eq!(
        listed.body["runs"],
        json!([]),
        "nothing may be stored: {}",
        listed.body
    );
    assert_eq!(
        stack.queued_messages().await?,
        0,
        "nothing may be published"
    );
    let info = c.get("/service-info").await?;
    assert_eq!(info.body["system_state_counts"], json!({}), "{}", info.body);
    Ok(())
}

#[tokio::test]
async fn malformed_nats_messages_do_not_hurt_the_engine() -> anyhow::Result<()> {
    let mut stack = Stack::start("malformed-nats").await?;
    stack.start_engine().await?;
    let nats = stack.nats.connect().await?;
    let js = async_nats::jetstream::new(nats.clone());
    let subject = format!(
        "{}.garbage",
        common::nats::run_subject("generic", "1", "SH", "1")
    );
    for garbage in [
        &b"not json"[..],
        br#"{"run_id": 5}"#,
        br#"{"run_id":"nope","request":{},"user_id":"a"}"#,
    ] {
        js.publish(subject.clone(), garbage.to_vec().into())
            .await?
            .await?;
    }
    let info = stack.client.get("/service-info").await?.body;
    let engine_id = info["engines"][0]["instances"][0]["id"]
        .as_str()
        .expect("the engine is registered")
        .to_owned();
    nats.publish(common::nats::cancel_subject(&engine_id), "garbage".into())
        .await?;
    nats.flush().await?;
    let deadline = std::time::Duration::from_secs(30);
    let engine = &stack.engines[0].proc;
    test_support::wait_for(
        "the engine to discard 3 bad run messages and 1 bad cancel",
        deadline,
        || async {
            let lines = engine.lines();
            let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
            let (runs, cancels) = (
                count("discarding malformed run message"),
                count("discarding malformed cancel message"),
            );
            if runs == 3 && cancels == 1 {
                Ok(())
            } else {
                Err(format!("{runs} run and {cancels} cancel discards logged"))
            }
        },
    )
    .await?;
    let run = stack.client.create_run(&run_body("ok.sh")).await?;
    stack
        .client
        .wait_for_state(&run, &["COMPLETE"], deadline)
        .await?;
    Ok(())
}
