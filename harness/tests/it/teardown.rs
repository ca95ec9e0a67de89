//! A scenario that panics leaves no process and no container behind — also one that panics
//! in the middle of its faults (a run in flight, its engine paused, NATS frozen): the
//! workflow's processes and the engine's group keeper go too, and a frozen container is
//! thawed and removed; on a NATS cluster too (its three servers, and on docker its network).

use std::time::Duration;

use harness::backend::Backend;
use harness::topology::Topology;
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

/// The children of `parent` whose command line contains `needle`.
fn children_named(parent: u32, needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(parent) && String::from_utf8_lossy(&cmdline).contains(needle)
        })
        .collect()
}

async fn panicking_scenario(backend: Backend, name: &str, faults: bool) -> anyhow::Result<()> {
    panicking_scenario_on(backend, Topology::Single, name, faults).await
}

async fn panicking_scenario_on(
    backend: Backend,
    topology: Topology,
    name: &str,
    faults: bool,
) -> anyhow::Result<()> {
    let name = name.to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut stack = Stack::start(
            &name,
            StackOptions {
                backend: Some(backend),
                nats: Some(topology),
                ..StackOptions::default()
            },
        )
        .await
        .expect("stack starts");
        let mut pids: Vec<u32> = stack.engines.iter().filter_map(|e| e.proc.pid()).collect();
        pids.extend(stack.api.as_ref().and_then(|a| a.proc.pid()));
        pids.extend(stack.infra.pids());
        let mut extra = Vec::new();
        if faults {
            let body = serde_json::json!({
                "workflow_type": "SH", "workflow_type_version": "1",
                "workflow_engine": "generic", "workflow_engine_version": "1",
                "workflow_url": test_support::workspace_root().join("fixtures/workflows/sleep.sh").display().to_string(),
            });
            let run = stack.client.create_run(&body).await.expect("create");
            // Every process of the run's sandbox (sh, its sleep, bwrap's init), found by its PID
            // namespace; the harness, not this guard, must end them.
            let workflow = harness::fault::run_processes(&stack, "alice", &run)
                .await
                .expect("the workflow runs")
                .observed_only();
            let workflow = test_support::wait_for(
                "the workflow's processes",
                Duration::from_secs(30),
                || async {
                    let pids = workflow.pids();
                    if pids.len() >= 2 {
                        Ok(pids)
                    } else {
                        Err(format!("{pids:?}"))
                    }
                },
            )
            .await
            .expect("the workflow runs");
            let engine = stack.engines[0].proc.pid().expect("engine pid");
            // The workflow may write its pid before the engine has registered its group
            // with the keeper (started on the first registration), so wait for it.
            let keeper = test_support::wait_for(
                "the engine's group keeper",
                Duration::from_secs(30),
                || async move {
                    let keeper = children_named(engine, "__metis-group-keeper");
                    if keeper.len() == 1 {
                        Ok(keeper)
                    } else {
                        Err(format!("keepers {keeper:?}"))
                    }
                },
            )
            .await
            .expect("the engine has one group keeper");
            extra.extend(workflow);
            extra.extend(keeper);
            stack.pause_engine(0).await.expect("pause");
            stack.freeze_nats().await.expect("freeze");
        }
        let containers = if backend == Backend::Docker {
            harness::images::scenario_containers(&name).expect("docker ps")
        } else {
            Vec::new()
        };
        tx.send((pids, extra, containers)).expect("report");
        panic!("a scenario failed on purpose");
    });
    let joined = task.await;
    assert!(
        joined.unwrap_err().is_panic(),
        "the scenario task must have panicked"
    );
    let (mut pids, extra, containers) = rx.await?;
    let servers = if topology == Topology::Cluster { 3 } else { 1 };
    let expected = if backend == Backend::Local {
        3 + servers
    } else {
        2
    };
    assert_eq!(
        pids.len(),
        expected,
        "expected the API, an engine (and locally NATS and the receiver): {pids:?}"
    );
    pids.extend(extra);
    if backend == Backend::Docker {
        assert_eq!(
            containers.len(),
            1 + servers,
            "expected the NATS and receiver containers: {containers:?}"
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
                let networks: Vec<String> = if backend == Backend::Docker {
                    let out = std::process::Command::new("docker")
                        .args(["network", "ls", "--format", "{{.Name}}"])
                        .output()
                        .map_err(|e| e.to_string())?;
                    String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .filter(|n| {
                            n.starts_with(harness::images::NETWORK_PREFIX)
                                && n.ends_with(&format!("-{}", std::process::id()))
                        })
                        .map(str::to_owned)
                        .collect()
                } else {
                    Vec::new()
                };
                if live.is_empty() && left.is_empty() && networks.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "live pids {live:?}, containers {left:?}, networks {networks:?}"
                    ))
                }
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_backend_leaves_nothing_after_a_panic() -> anyhow::Result<()> {
    panicking_scenario(Backend::Local, "teardown-local", false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_backend_undoes_faults_after_a_panic() -> anyhow::Result<()> {
    panicking_scenario(Backend::Local, "teardown-local-faults", true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_backend_undoes_faults_after_a_panic() -> anyhow::Result<()> {
    if harness::backend::docker_available().is_err()
        && std::env::var("E2E_BACKEND").as_deref() == Ok("local")
    {
        eprintln!("docker_backend_undoes_faults_after_a_panic: not run (E2E_BACKEND=local)");
        return Ok(());
    }
    panicking_scenario(Backend::Docker, "teardown-docker-faults", true).await
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
    panicking_scenario(Backend::Docker, "teardown-docker", false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_cluster_leaves_nothing_after_a_panic() -> anyhow::Result<()> {
    panicking_scenario_on(
        Backend::Local,
        Topology::Cluster,
        "teardown-local-cluster",
        true,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_cluster_leaves_nothing_after_a_panic() -> anyhow::Result<()> {
    if harness::backend::docker_available().is_err()
        && std::env::var("E2E_BACKEND").as_deref() == Ok("local")
    {
        eprintln!("a_docker_cluster_leaves_nothing_after_a_panic: not run (E2E_BACKEND=local)");
        return Ok(());
    }
    panicking_scenario_on(
        Backend::Docker,
        Topology::Cluster,
        "teardown-docker-cluster",
        true,
    )
    .await
}
