//! A workflow is someone else's code, and a request someone else's input. Tried as they would:
//! host files and symlink escapes as `workflow_url`, every spelling of a denied parameter, a
//! workflow that prints its environment, a client without NATS credentials, and a cancel
//! forged on NATS. Each is refused (a 400 naming the rule, nothing stored) or harmless.

use std::time::Duration;

use serde_json::json;

use crate::lifecycle::long_run;
use crate::support::{Stack, body_for, run_body};

const DEADLINE: Duration = Duration::from_secs(30);

#[track_caller]
fn refused(what: &str, reply: &test_support::metis::Reply, needles: &[&str]) {
    assert_eq!(reply.status, 400, "{what}: {}", reply.body);
    let msg = reply.body["msg"].as_str().unwrap_or_default();
    for n in needles {
        assert!(msg.contains(n), "{what}: '{msg}' should mention '{n}'");
    }
}

#[tokio::test]
async fn workflow_urls_outside_the_roots_are_refused_naming_the_rule() -> anyhow::Result<()> {
    let stack = Stack::start("confine-urls").await?;
    stack.register_config_only().await?;
    let c = &stack.client;
    let inside = stack.script("inside.sh", "echo inside")?;
    let escape = stack.scripts_dir().join("escape.sh");
    std::os::unix::fs::symlink("/etc/passwd", &escape)?;
    let outside_dir = stack.dir.path().join("elsewhere");
    std::fs::create_dir_all(&outside_dir)?;
    std::fs::write(outside_dir.join("x.sh"), "echo x")?;
    let linked_dir = stack.scripts_dir().join("linked");
    std::os::unix::fs::symlink(&outside_dir, &linked_dir)?;

    for (what, url, needles) in [
        (
            "a host file",
            "/etc/passwd".to_owned(),
            &[
                "workflow_url",
                "outside the workflow roots",
                "allowedWorkflowRoots",
            ][..],
        ),
        (
            "a symlink to a host file",
            escape.display().to_string(),
            &["workflow_url", "through a symlink", "outside"][..],
        ),
        (
            "a symlinked folder pointing out",
            linked_dir.join("x.sh").display().to_string(),
            &["workflow_url", "outside"][..],
        ),
        (
            "a climb out of a root",
            format!("{}/../elsewhere/x.sh", stack.scripts_dir().display()),
            &["workflow_url", "'..'"][..],
        ),
        (
            "a relative path",
            "fixtures/workflows/ok.sh".to_owned(),
            &["workflow_url", "absolute path"][..],
        ),
        (
            "a URL scheme the engine does not allow",
            "http://example.org/wf.sh".to_owned(),
            &["workflow_url", "http", "allowedUrlSchemes"][..],
        ),
        (
            "a file URL",
            "file:///etc/passwd".to_owned(),
            &["workflow_url", "file"][..],
        ),
    ] {
        refused(what, &c.post("/runs", &body_for(&url)).await?, needles);
    }
    let infra = stack.infra().await?;
    assert_eq!(
        infra.user_runs("alice").await?,
        Vec::new(),
        "nothing stored"
    );
    assert_eq!(stack.queued_messages().await?, 0, "nothing published");
    // Inside a root it is accepted.
    c.create_run(&body_for(&inside)).await?;
    Ok(())
}

#[tokio::test]
async fn every_spelling_of_a_denied_parameter_is_refused() -> anyhow::Result<()> {
    let stack = Stack::start("confine-denied").await?;
    stack.register_config_only().await?;
    let c = &stack.client;
    for spelling in ["exec", "--exec", "-exec", "EXEC", "Exec", "--Exec", "ex_ec"] {
        if spelling == "ex_ec" {
            // Not the same name: `_` reads as `-`, so this is `ex-ec` — an unknown one.
            let mut body = run_body("ok.sh");
            body["workflow_engine_parameters"] = json!({spelling: "id"});
            refused(
                spelling,
                &c.post("/runs", &body).await?,
                &["unknown parameter"],
            );
            continue;
        }
        let mut body = run_body("ok.sh");
        body["workflow_engine_parameters"] = json!({spelling: "id"});
        refused(
            spelling,
            &c.post("/runs", &body).await?,
            &[&format!("workflow_engine_parameters.{spelling}"), "denied"],
        );
        let mut body = run_body("ok.sh");
        body["workflow_params"] = json!({spelling: "id"});
        refused(
            spelling,
            &c.post("/runs", &body).await?,
            &[&format!("workflow_params.{spelling}")],
        );
    }
    let mut body = run_body("ok.sh");
    body["workflow_params"] = json!({"a b": "x"});
    refused(
        "a key with a space",
        &c.post("/runs", &body).await?,
        &["workflow_params.a b"],
    );
    let infra = stack.infra().await?;
    assert_eq!(
        infra.user_runs("alice").await?,
        Vec::new(),
        "nothing stored"
    );
    Ok(())
}

#[tokio::test]
async fn a_workflow_sees_no_infrastructure() -> anyhow::Result<()> {
    let mut stack = Stack::start("confine-env").await?;
    stack.start_engine().await?;
    let c = stack.client.clone();
    let run = c.create_run(&run_body("env.sh")).await?;
    c.wait_for_state(&run, &["COMPLETE"], DEADLINE).await?;
    let lines = c.log_lines(&run).await?;
    let vars: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("stdout: "))
        .collect();
    assert!(!vars.is_empty(), "{lines:?}");
    for v in &vars {
        for secret in [
            "NATS_",
            "OTEL_",
            "ENGINE_CONFIG_PATH",
            "AUTH_",
            "RUST_LOG",
            "LOG_FORMAT",
            "HEARTBEAT_INTERVAL_MS",
            "CARGO",
        ] {
            assert!(!v.starts_with(secret), "a workflow saw {v}");
        }
        assert!(
            !v.contains(&stack.nats.password),
            "a workflow saw the NATS password: {v}"
        );
    }
    let workdir = stack
        .dir
        .path()
        .join("runs/alice")
        .join(&run)
        .display()
        .to_string();
    for expected in [
        format!("HOME={workdir}"),
        format!("TMPDIR={workdir}/tmp"),
        "DECLARED=from engine.yaml".to_owned(),
    ] {
        assert!(vars.contains(&expected.as_str()), "{expected} in {vars:?}");
    }
    assert!(vars.iter().any(|v| v.starts_with("PATH=")), "{vars:?}");

    // The user's folder is the engine user's alone; the run's workdir is gone with the run.
    use std::os::unix::fs::PermissionsExt;
    let parent = format!("{}/runs/alice", stack.dir.path().display());
    let mode = std::fs::metadata(&parent)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{parent}: {mode:o}");
    assert!(
        !std::path::Path::new(&workdir).exists(),
        "{workdir} is removed when its run ends"
    );

    // Nor through /proc: the run has a PID namespace of its own, so no process of the
    // engine's is there to read (whichever user the engine runs as, root included).
    let snoop = stack.script(
        "snoop.sh",
        "for e in /proc/[0-9]*/environ; do tr '\\000' '\\n' < \"$e\" 2>&1; done; echo snooped",
    )?;
    let run = c.create_run(&body_for(&snoop)).await?;
    c.wait_for_state(&run, &["COMPLETE", "EXECUTOR_ERROR"], DEADLINE)
        .await?;
    let lines = c.log_lines(&run).await?;
    assert!(lines.contains(&"stdout: snooped".to_owned()), "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| !l.contains(&stack.nats.password) && !l.contains("NATS_")),
        "a workflow read the engine's environment: {lines:?}"
    );

    // And without the credentials, NATS itself refuses a client (a workflow has none).
    let anonymous = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(&stack.nats.url)
        .await;
    let err = anonymous.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        err.to_lowercase().contains("authorization"),
        "a client without credentials must be refused, got: {err:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_cancel_forged_on_nats_cancels_nothing() -> anyhow::Result<()> {
    let mut stack = Stack::start("confine-forged-cancel").await?;
    stack.start_engine().await?;
    let (run, processes) = long_run(&stack).await?;
    let detail = stack.client.get(&format!("/runs/{run}")).await?.body;
    let engine_id = detail["engine_id"].as_str().unwrap_or_default().to_owned();
    assert!(!engine_id.is_empty(), "{detail}");

    // Someone with NATS access publishes a cancel without the API: no CANCELING record.
    let nats = stack.nats.connect().await?;
    nats.publish(
        common::nats::cancel_subject(&engine_id),
        serde_json::to_vec(&json!({"run_id": run}))?.into(),
    )
    .await?;
    nats.flush().await?;
    let engine_log = stack.logs.join("engine-1.log");
    test_support::wait_for("the engine to drop the forged cancel", DEADLINE, || async {
        let text = std::fs::read_to_string(&engine_log).unwrap_or_default();
        if text.contains("ignoring a cancel message") {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await?;
    assert_eq!(stack.client.state(&run).await?, "RUNNING");
    assert!(
        !processes.alive().is_empty(),
        "the workflow is still running"
    );
    // A real cancel still works.
    let r = stack
        .client
        .post(&format!("/runs/{run}/cancel"), &json!({}))
        .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    stack
        .client
        .wait_for_state(&run, &["CANCELED"], DEADLINE)
        .await?;
    processes.wait_gone(DEADLINE).await?;
    Ok(())
}
