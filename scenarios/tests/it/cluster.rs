//! NATS as production runs it: a 3-server JetStream cluster, streams and buckets replicated
//! 3×. `cluster_run_completes` proves the topology never changes a trace (its tree must equal
//! the single-server `run_completes` snapshot); `cluster_leader_lost_mid_run` kills the server
//! leading the run records while runs are in flight and queued: every run completes, once,
//! with every line.

use harness::topology::Topology;
use harness::tree::expect;
use harness::{Stack, StackOptions};

use crate::support::{DEADLINE, check_census, check_tree, engine_ids, run_body};

async fn cluster_stack(scenario: &str, engines: usize) -> anyhow::Result<Stack> {
    Stack::start(
        scenario,
        StackOptions {
            engines,
            nats: Some(Topology::Cluster),
            ..StackOptions::default()
        },
    )
    .await
}

/// The body of a committed snapshot (what follows its `---` header).
fn snapshot_body(name: &str) -> anyhow::Result<String> {
    let path = test_support::workspace_root()
        .join("scenarios/snapshots")
        .join(format!("{name}.snap"));
    let text = std::fs::read_to_string(&path)?;
    let body = text
        .splitn(3, "---\n")
        .nth(2)
        .ok_or_else(|| anyhow::anyhow!("{} has no snapshot header", path.display()))?;
    Ok(body.trim_end().to_owned())
}

// ANCHOR: cluster_run_completes
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_run_completes() -> anyhow::Result<()> {
    cluster_stack("cluster_run_completes", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                assert_eq!(s.infra.nats_servers(), ["n1", "n2", "n3"]);
                let run = s.client.create_run(&run_body("ok.sh")).await?;
                s.client
                    .wait_for_state(&run, &["COMPLETE"], DEADLINE)
                    .await?;
                let ids = engine_ids(s).await?;
                let forest = check_tree(s, "cluster_run_completes", 1, &ids).await?;
                // The topology never changes a trace.
                assert_eq!(
                    forest.render().trim_end(),
                    snapshot_body("run_completes")?,
                    "the cluster's tree differs from the single server's run_completes"
                );
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: cluster_run_completes

// ANCHOR: cluster_leader_lost_mid_run
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_leader_lost_mid_run() -> anyhow::Result<()> {
    const RUNS: usize = 11;
    cluster_stack("cluster_leader_lost_mid_run", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                // Runs held open by a gate: one engine holds 4 at a time, so with one RUNNING
                // there are 10 more, 3 in flight and 7 QUEUED, when the leader goes.
                let gate = s.dir.join("gate");
                let mut body = run_body("gated.sh");
                body["workflow_params"] = serde_json::json!({"gate": gate.display().to_string()});
                let first = s.client.create_run(&body).await?;
                s.client
                    .wait_for_state(&first, &["RUNNING"], DEADLINE)
                    .await?;
                let mut runs = vec![first];
                for _ in 1..RUNS {
                    runs.push(s.client.create_run(&body).await?);
                }
                let mut queued = 0;
                for run in &runs {
                    if s.client.state(run).await? == "QUEUED" {
                        queued += 1;
                    }
                }
                assert!(
                    queued >= RUNS - 4,
                    "runs wait for the engine: {queued} queued"
                );
                // Kill the server that leads the run records (and so every CAS on them).
                let leader = s.nats_leader("KV_metis_runs").await?;
                s.timeline.note(format!(
                    "KV_metis_runs is led by {leader}; METIS_RUNS by {}",
                    s.nats_leader("METIS_RUNS").await?
                ));
                s.kill_nats_server(&leader).await?;
                std::fs::write(&gate, "open")?;
                for run in &runs {
                    s.client
                        .wait_for_state(run, &["COMPLETE"], DEADLINE * 2)
                        .await?;
                    let lines = s.client.log_lines(run).await?;
                    assert_eq!(
                        lines,
                        ["stdout: gated: waiting", "stdout: gated: done"],
                        "every line of {run}, once"
                    );
                }
                let new_leader = s.nats_leader("KV_metis_runs").await?;
                assert_ne!(new_leader, leader, "a new leader was elected");
                s.restart_nats_server(&leader).await?;

                let engines = engine_ids(s).await?;
                let data = check_census(s, "cluster_leader_lost_mid_run", &runs, &engines).await?;
                let forest = harness::tree::SpanForest::from_otlp(
                    &harness::tree::only_traces_with(
                        &data,
                        "run_id",
                        &runs.iter().map(String::as_str).collect::<Vec<_>>(),
                    ),
                    &harness::tree::Options::new().redact(s.dir.display().to_string(), "[e2e-dir]"),
                )?;
                expect::span()
                    .named("workflow_run")
                    .with_attr("state", "COMPLETE")
                    .times(RUNS)
                    .check(&forest)?;
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: cluster_leader_lost_mid_run
