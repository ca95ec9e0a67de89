//! The troubleshooting page's examples, caused for real: each test makes one thing go wrong
//! the way it goes wrong for a user — a port already taken, a machine without bubblewrap, a
//! NATS image that is not there, an engine killed under its run, a snapshot gone stale — runs
//! the command the user would run, and pins what it printed as a transcript
//! (`scenarios/snapshots/transcripts/troubleshoot_*.snap`) that the book's troubleshooting
//! page quotes. The page can therefore only show output the tools still give.

use crate::support::{DEADLINE, engine_ids, run_body, stack, wait_for_log};
use crate::transcript::Transcript;

const DESCRIPTION: &str = "what a user sees when this goes wrong (the troubleshooting page shows it); regenerate with `just review`";

/// A NATS server and the settings a service needs to reach it and to verify tokens.
async fn nats_env(
    dir: &std::path::Path,
) -> anyhow::Result<(test_support::NatsServer, Vec<(String, String)>)> {
    let nats = test_support::NatsServer::start(dir).await?;
    let env = vec![
        ("NATS_URL".to_owned(), nats.url.clone()),
        (
            "NATS_USER".to_owned(),
            test_support::NATS_TEST_USER.to_owned(),
        ),
        ("NATS_PASSWORD".to_owned(), nats.password.clone()),
        (
            "AUTH_JWT_SECRET".to_owned(),
            test_support::metis::jwt_secret().to_owned(),
        ),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
        ("NO_COLOR".to_owned(), "1".to_owned()),
    ];
    Ok((nats, env))
}

/// `metis-api` on a port another process holds: it exits at once, naming the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn troubleshoot_port_in_use() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (nats, mut env) = nats_env(dir.path()).await?;
    let held = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = held.local_addr()?.port();
    env.push(("PORT".to_owned(), port.to_string()));
    let mut t = Transcript::new(None, env);
    t.redact(format!(":{port}"), ":8080");
    t.redact(nats.url.clone(), "nats://127.0.0.1:4222");
    t.show_as("$PORT", "8080");
    t.sh_fails("APP_PORT=$PORT target/debug/metis-api")?;
    assert!(
        t.text.contains("8080"),
        "the error names the address: {}",
        t.text
    );
    t.assert_snapshot("troubleshoot_port_in_use", DESCRIPTION);
    Ok(())
}

/// The engine on a machine without bubblewrap: it refuses to start and says what to install.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn troubleshoot_no_sandbox() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_nats, mut env) = nats_env(dir.path()).await?;
    let bare = dir.path().join("bin-without-bwrap");
    std::fs::create_dir_all(&bare)?;
    env.push(("BARE_PATH".to_owned(), bare.display().to_string()));
    env.push(("HEALTH_PORT".to_owned(), "0".to_owned()));
    let mut t = Transcript::new(None, env);
    t.redact(bare.display().to_string(), "/usr/local/bin");
    t.show_as("$BARE_PATH", "/usr/local/bin");
    let out = t.sh_fails(
        "PATH=$BARE_PATH ENGINE_CONFIG_PATH=fixtures/engines/generic.yaml \
         target/debug/metis-engine-generic",
    )?;
    assert!(
        out.contains("bubblewrap") && out.contains("METIS_UNSAFE_NO_SANDBOX"),
        "the error says what to install and how to opt out: {out}"
    );
    t.assert_snapshot("troubleshoot_no_sandbox", DESCRIPTION);
    Ok(())
}

/// The docker backend asked for a NATS image that is not there: the scenario fails before any
/// container starts, saying how to build the images or run without Docker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn troubleshoot_missing_image() -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let mut t = Transcript::new(
        None,
        vec![
            ("SCENARIOS".to_owned(), exe.display().to_string()),
            ("METIS_SKIP_BUILD".to_owned(), "1".to_owned()),
            ("E2E_QUIET".to_owned(), "1".to_owned()),
            ("RUST_BACKTRACE".to_owned(), "0".to_owned()),
        ],
    );
    t.show_as("$SCENARIOS ", "cargo test -p scenarios --test it -- ");
    // What the scenario's own error says, without the test runner's frame around it.
    let out = t.run_keep(
        "E2E_BACKEND=docker E2E_NATS_IMAGE=metis-e2e/nats:no-such-tag \\\n    \
         $SCENARIOS --exact smoke::smoke_one_run_one_trace_across_both_services",
        |output| {
            let from = output.find("Error: ").unwrap_or(0);
            let error = &output[from..];
            let error = error.split("\n\n").next().unwrap_or(error);
            // The daemon's own words depend on the machine (its resolver, its registry).
            match (
                error.find("pulling it failed: "),
                error.find("\nBuild the local images"),
            ) {
                (Some(a), Some(b)) if a < b => format!(
                    "{}pulling it failed: [the Docker daemon's answer]{}",
                    &error[..a],
                    &error[b..]
                ),
                _ => error.to_owned(),
            }
        },
    )?;
    assert!(
        out.contains("just images") && out.contains("E2E_BACKEND=local"),
        "the error says what to do: {out}"
    );
    t.assert_snapshot("troubleshoot_missing_image", DESCRIPTION);
    Ok(())
}

/// An engine killed under its run: the reaper ends the run SYSTEM_ERROR, and the run says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn troubleshoot_killed_engine() -> anyhow::Result<()> {
    stack("troubleshoot_killed_engine", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                let run = s.client.create_run(&run_body("sleep.sh")).await?;
                s.client
                    .wait_for_state(&run, &["RUNNING"], DEADLINE)
                    .await?;
                wait_for_log(s, &run, "stdout: started").await?;
                let engines = engine_ids(s).await?;
                s.kill_engine(0).await?;
                s.client
                    .wait_for_state(&run, &["SYSTEM_ERROR"], DEADLINE)
                    .await?;
                let mut t = Transcript::new(
                    None,
                    vec![
                        (
                            "METIS".to_owned(),
                            s.client.base.trim_start_matches("http://").to_owned(),
                        ),
                        ("RUN".to_owned(), run.clone()),
                        ("TOKEN".to_owned(), test_support::metis::mint_token("alice")),
                    ],
                );
                t.redact(run.clone(), "[run#1]");
                for (i, id) in engines.iter().enumerate() {
                    t.redact(id.clone(), format!("[engine#{}]", i + 1));
                }
                t.sh(
                    "curl -s \"$METIS/runs/$RUN\" -H \"authorization: Bearer $TOKEN\" \\\n    \
                     | python3 -c 'import json, sys; r = json.load(sys.stdin); print(r[\"state\"]); print(r[\"error\"])'",
                )?;
                t.assert_snapshot("troubleshoot_killed_engine", DESCRIPTION);
                Ok(())
            })
        })
        .await
}

/// A snapshot gone stale: what `spantree diff` says between the committed tree and the one a
/// changed service produced (here `create_run`'s `user_id` renamed to `user`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn troubleshoot_stale_snapshot() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let committed = test_support::workspace_root().join("scenarios/snapshots/run_completes.snap");
    let text = std::fs::read_to_string(&committed)?;
    let changed = text.replacen(
        "user_id=alice workflow_engine",
        "user=alice workflow_engine",
        1,
    );
    anyhow::ensure!(
        changed != text,
        "run_completes.snap has create_run's user_id"
    );
    let new = dir.path().join("run_completes.snap.new");
    std::fs::write(&new, changed)?;
    let spantree = test_support::bin("spantree")?;
    anyhow::ensure!(
        spantree.ends_with("debug/spantree"),
        "the transcript runs target/debug/spantree, the build is {}",
        spantree.display()
    );
    let mut t = Transcript::new(None, vec![("NEW".to_owned(), new.display().to_string())]);
    t.redact(
        new.display().to_string(),
        "scenarios/snapshots/run_completes.snap.new",
    );
    t.show_as("\"$NEW\"", "scenarios/snapshots/run_completes.snap.new");
    let out =
        t.sh_fails("target/debug/spantree diff scenarios/snapshots/run_completes.snap \"$NEW\"")?;
    assert!(out.contains("user"), "the diff names the change: {out}");
    t.assert_snapshot("troubleshoot_stale_snapshot", DESCRIPTION);
    Ok(())
}

/// The shell a reader of the troubleshooting page has: the API's address, a token, a run.
fn reader_env(s: &harness::Stack, run: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "METIS".to_owned(),
            s.client.base.trim_start_matches("http://").to_owned(),
        ),
        ("TOKEN".to_owned(), test_support::metis::mint_token("alice")),
    ];
    env.extend(run.map(|r| ("RUN".to_owned(), r.to_owned())));
    env
}

/// A run that stays QUEUED because no engine of its kind runs: the run says QUEUED, and
/// `/service-info` lists the engine's config with no live instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn troubleshoot_queued() -> anyhow::Result<()> {
    stack("troubleshoot_queued", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                // The engine registered its config, then went away: runs are accepted and wait.
                s.stop_engine(0).await?;
                let run = s.client.create_run(&run_body("ok.sh")).await?;
                let mut t = Transcript::new(None, reader_env(s, Some(&run)));
                t.redact(run.clone(), "[run#1]");
                t.sh("curl -s \"$METIS/runs/$RUN/status\" -H \"authorization: Bearer $TOKEN\"; echo")?;
                let out = t.sh(
                    "curl -s \"$METIS/service-info\" | python3 -c 'import json, sys\n\
                     for e in json.load(sys.stdin)[\"engines\"]:\n    \
                     print(e[\"name\"], e[\"version\"], \"live instances:\", len(e[\"instances\"]))'",
                )?;
                assert!(out.contains("live instances: 0"), "{out}");
                t.assert_snapshot("troubleshoot_queued", DESCRIPTION);
                Ok(())
            })
        })
        .await
}

/// A request is refused, and the body names what was wrong: no token, then a field the API
/// does not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn troubleshoot_refused() -> anyhow::Result<()> {
    stack("troubleshoot_refused", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                let mut t = Transcript::new(None, reader_env(s, None));
                t.sh("curl -s \"$METIS/runs\"; echo")?;
                let out = t.sh(
                    "curl -s -XPOST \"$METIS/runs\" -H \"authorization: Bearer $TOKEN\" \\\n    \
                     -H 'content-type: application/json' -d '{\"workflow_typ\": \"SH\"}'; echo",
                )?;
                assert!(
                    out.contains("workflow_typ"),
                    "the 400 names the field: {out}"
                );
                t.assert_snapshot("troubleshoot_refused", DESCRIPTION);
                Ok(())
            })
        })
        .await
}

/// No spans arrive: the collector is not there. The service keeps working and says so once in
/// its log, naming the endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn troubleshoot_no_spans() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (nats, mut env) = nats_env(dir.path()).await?;
    // Nothing listens here: a collector that is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let log = dir.path().join("metis-api.log");
    env.extend([
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), endpoint.clone()),
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "100".to_owned()),
        ("APP_PORT".to_owned(), "0".to_owned()),
        ("RUST_LOG".to_owned(), "info".to_owned()),
    ]);
    let envs: Vec<(&str, String)> = env
        .iter()
        .filter(|(k, _)| !k.starts_with("NATS_"))
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let mut api = test_support::metis::start_api(&nats.endpoint(), dir.path(), &envs).await?;
    // One request makes one span, which the exporter then fails to send.
    let client = test_support::metis::ApiClient::new(&api.url);
    assert_eq!(client.get("/service-info").await?.status, 200);
    let wrote = api
        .proc
        .wait_for_line("the export failure to be logged", DEADLINE, |l| {
            l.contains("span export failed").then_some(())
        })
        .await;
    wrote?;
    std::fs::write(&log, api.proc.lines().join("\n"))?;
    let mut t = Transcript::new(None, vec![("LOG".to_owned(), log.display().to_string())]);
    t.redact(endpoint, "http://127.0.0.1:4317");
    t.show_as("\"$LOG\"", "metis-api.log");
    // The line as the JSON log holds it, without the fields that differ per run.
    let out = t.sh(
        "grep 'span export' \"$LOG\" | head -1 \\\n    \
         | python3 -c 'import json, sys; l = json.loads(sys.stdin.read()); print(l[\"level\"], l[\"message\"]); print(\"endpoint:\", l[\"endpoint\"])'",
    )?;
    assert!(out.contains("span export failed"), "{out}");
    t.assert_snapshot("troubleshoot_no_spans", DESCRIPTION);
    Ok(())
}

/// The engine's span hangs in a trace of its own when the API's spans of that trace never
/// arrived: `spantree check` names the orphan, `render --draw-orphans` draws where it hangs.
/// Caused here as an outage causes it: a real run's dump with the API's spans taken out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn troubleshoot_orphan_span() -> anyhow::Result<()> {
    stack("troubleshoot_orphan_span", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                let run = s.client.create_run(&run_body("ok.sh")).await?;
                s.client
                    .wait_for_state(&run, &["COMPLETE"], DEADLINE)
                    .await?;
                let engines = engine_ids(s).await?;
                let mut data = s.collect_spans(1).await?;
                // The API's batch was lost (killed, or its collector down): only the engine's
                // spans arrived.
                data.resource_spans.retain(|rs| {
                    harness::otlp::service_name(rs) == Some("metis-engine-generic")
                });
                anyhow::ensure!(!data.resource_spans.is_empty(), "the engine's spans");
                let dump = s.dir.join("engine-only-spans.json");
                std::fs::write(&dump, serde_json::to_vec_pretty(&data)?)?;
                let spantree = test_support::bin("spantree")?;
                anyhow::ensure!(spantree.ends_with("debug/spantree"), "{}", spantree.display());
                let mut t =
                    Transcript::new(None, vec![("DUMP".to_owned(), dump.display().to_string())]);
                t.show_as("\"$DUMP\"", "spans.json");
                t.redact(run.clone(), "[run#1]");
                for (i, id) in engines.iter().enumerate() {
                    t.redact(id.clone(), format!("[engine#{}]", i + 1));
                }
                let out = t.sh_fails("target/debug/spantree check \"$DUMP\"")?;
                assert!(out.contains("orphan") || out.contains("parent"), "{out}");
                t.sh(
                    "target/debug/spantree render --draw-orphans --id-family run_id=run \"$DUMP\" \\\n    \
                     | sed -n '/^trace#/,$p' | head -4",
                )?;
                t.assert_snapshot("troubleshoot_orphan_span", DESCRIPTION);
                Ok(())
            })
        })
        .await
}
