//! A scenario that panics leaves no process and no container behind.

use std::time::Duration;

use harness::backend::Backend;
use harness::{Stack, StackOptions};

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

async fn panicking_scenario(backend: Backend, name: &str) -> anyhow::Result<()> {
    let name = name.to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let stack = Stack::start(
            &name,
            StackOptions {
                backend: Some(backend),
                ..StackOptions::default()
            },
        )
        .await
        .expect("stack starts");
        let mut pids: Vec<u32> = stack.engines.iter().filter_map(|e| e.proc.pid()).collect();
        pids.extend(stack.api.as_ref().and_then(|a| a.proc.pid()));
        pids.extend(stack.infra.pids());
        let containers = if backend == Backend::Docker {
            harness::images::own_containers().expect("docker ps")
        } else {
            Vec::new()
        };
        tx.send((pids, containers)).expect("report");
        panic!("a scenario failed on purpose");
    });
    let joined = task.await;
    assert!(
        joined.unwrap_err().is_panic(),
        "the scenario task must have panicked"
    );
    let (pids, containers) = rx.await?;
    let expected = if backend == Backend::Local { 4 } else { 2 };
    assert_eq!(
        pids.len(),
        expected,
        "expected the API, an engine (and locally NATS and the receiver): {pids:?}"
    );
    if backend == Backend::Docker {
        assert_eq!(
            containers.len(),
            2,
            "expected NATS and the receiver containers: {containers:?}"
        );
    }
    test_support::wait_for(
        "every process and container of the panicked scenario to be gone",
        Duration::from_secs(30),
        || {
            let pids = pids.clone();
            let containers = containers.clone();
            async move {
                let live: Vec<u32> = pids.into_iter().filter(|p| alive(*p)).collect();
                let left: Vec<String> = if containers.is_empty() {
                    Vec::new()
                } else {
                    let now = harness::images::own_containers().map_err(|e| e.to_string())?;
                    containers
                        .into_iter()
                        .filter(|c| {
                            now.iter()
                                .any(|n| c.starts_with(n.as_str()) || n.starts_with(c.as_str()))
                        })
                        .collect()
                };
                if live.is_empty() && left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("live pids {live:?}, containers {left:?}"))
                }
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_backend_leaves_nothing_after_a_panic() -> anyhow::Result<()> {
    panicking_scenario(Backend::Local, "teardown-local").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_backend_leaves_nothing_after_a_panic() -> anyhow::Result<()> {
    if let Err(why) = harness::backend::docker_available() {
        // Never a silent pass: without Docker this fails, unless the caller chose the local
        // backend explicitly (E2E_BACKEND=local), which this test then reports.
        assert_eq!(
            std::env::var("E2E_BACKEND").as_deref(),
            Ok("local"),
            "the docker teardown test needs a Docker engine ({why}); set E2E_BACKEND=local to run without it"
        );
        eprintln!(
            "docker_backend_leaves_nothing_after_a_panic: not run (E2E_BACKEND=local): {why}"
        );
        return Ok(());
    }
    panicking_scenario(Backend::Docker, "teardown-docker").await
}
