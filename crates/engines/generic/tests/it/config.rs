//! Start-up errors: a bad engine.yaml or a bad environment variable stops the engine with a
//! non-zero status and a message naming the file and key, or the variable.

use std::path::Path;

use anyhow::Result;

use crate::support::{Bed, TIMEOUT};

/// Runs the engine to its exit; returns the status and everything it printed.
async fn run_to_exit(
    bed: &Bed,
    config: &Path,
    extra: &[(&str, &str)],
) -> Result<(std::process::ExitStatus, String)> {
    let mut cmd = test_support::clean_command(test_support::bin("metis-engine-generic")?);
    cmd.envs(bed.env(config));
    cmd.envs(extra.iter().map(|(k, v)| (*k, *v)));
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(TIMEOUT, cmd.output()).await??;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status, text))
}

#[track_caller]
fn check(status: std::process::ExitStatus, output: &str, needles: &[&str]) {
    assert!(
        !status.success(),
        "expected a non-zero exit, got {status}; output:\n{output}"
    );
    for n in needles {
        assert!(
            output.contains(n),
            "expected the output to mention {n:?}; output:\n{output}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_or_environment_stops_the_engine_with_a_clear_error() -> Result<()> {
    let bed = Bed::start("config-error").await?;

    let bad = bed.config("bad.yaml", |c| c.engine.max_concurrent_runs = 0)?;
    let (status, out) = run_to_exit(&bed, &bad, &[]).await?;
    check(
        status,
        &out,
        &[
            "engine.maxConcurrentRuns",
            &bad.display().to_string(),
            "at least 1",
        ],
    );

    let typo = bed.dir.path().join("typo.yaml");
    let text = std::fs::read_to_string(bed.config("good.yaml", |_| {})?)?
        .replace("commandTemplate", "commandTempl");
    std::fs::write(&typo, text)?;
    let (status, out) = run_to_exit(&bed, &typo, &[]).await?;
    check(status, &out, &["commandTempl", &typo.display().to_string()]);

    let missing = bed.dir.path().join("missing.yaml");
    let (status, out) = run_to_exit(&bed, &missing, &[]).await?;
    check(status, &out, &[&missing.display().to_string()]);

    let good = bed.config("good.yaml", |_| {})?;
    let (status, out) = run_to_exit(&bed, &good, &[("HEALTH_PORT", "eighty")]).await?;
    check(status, &out, &["HEALTH_PORT", "eighty"]);
    let (status, out) = run_to_exit(&bed, &good, &[("SHUTDOWN_GRACE_MS", "soon")]).await?;
    check(status, &out, &["SHUTDOWN_GRACE_MS"]);

    // Nothing listens on this port: NATS is unreachable.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let (status, out) = run_to_exit(&bed, &good, &[("NATS_URL", &url)]).await?;
    check(status, &out, &["connect to NATS", &url]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_version_that_collides_in_nats_names_is_refused() -> Result<()> {
    let bed = Bed::start("config-collision").await?;
    let first = bed.config("one-dot-zero.yaml", |c| c.engine.version = "1.0".into())?;
    let mut engine = bed.engine("engine", &first).await?;
    // `1_0` is the same subject token and config key as `1.0`.
    let second = bed.config("one-underscore-zero.yaml", |c| {
        c.engine.version = "1_0".into();
    })?;
    let (status, out) = run_to_exit(&bed, &second, &[]).await?;
    check(
        status,
        &out,
        &[
            "generic 1_0",
            "collides with the registered engine generic 1.0",
            "'generic/1_0'",
        ],
    );
    // The first one's config is untouched, and it still serves.
    let key = common::nats::engine_config_key("generic", "1.0");
    let stored = bed
        .infra
        .engine_configs
        .get(&key)
        .await?
        .expect("registered");
    let spec: common::EngineSpec = serde_json::from_slice(&stored)?;
    assert_eq!(spec.version, "1.0");
    // A restart of the same engine (same spelling) is no collision.
    engine.stop().await?;
    let mut again = bed.engine("engine-again", &first).await?;
    again.stop().await?;
    Ok(())
}

/// The engine refuses to start where the machine cannot sandbox its runs: with no `bwrap` on
/// its `PATH` (and no opt-out), it exits non-zero naming what is missing and the loud
/// development opt-out, and it never registers: no run could reach an unsandboxed engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_refuses_to_start_without_its_sandbox() -> Result<()> {
    let bed = Bed::start("config-no-sandbox").await?;
    let good = bed.config("good.yaml", |_| {})?;
    let empty = bed.dir.path().join("no-tools");
    std::fs::create_dir_all(&empty)?;
    let path = empty.display().to_string();
    let (status, out) = run_to_exit(&bed, &good, &[("PATH", path.as_str())]).await?;
    check(
        status,
        &out,
        &[
            "bubblewrap",
            "must not run unsandboxed",
            "METIS_UNSAFE_NO_SANDBOX",
        ],
    );
    let key = common::nats::engine_config_key("generic", "1");
    assert!(
        bed.infra.engine_configs.get(&key).await?.is_none(),
        "an engine that cannot sandbox registers nothing"
    );
    Ok(())
}
