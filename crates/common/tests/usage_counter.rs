//! The per-user usage counter (`Infra::add_usage`) against a real three-server JetStream
//! cluster: writers on different servers race on one user's key, and every increment lands
//! exactly once. A clustered server answers a lost compare-and-set race with error code 10164
//! (not the single server's 10071); a writer that took that for a failure gave up, and the
//! API's count of a user's stored runs came out one short (seen in `two_apis_two_engines`).

use common::infra::Infra;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_on_a_cluster_lose_no_increment() -> anyhow::Result<()> {
    const WRITERS: u64 = 3;
    const EACH: u64 = 15;
    let logs = tempfile::tempdir()?;
    let cluster = test_support::cluster::NatsCluster::start(logs.path(), 3).await?;
    let endpoint = cluster.endpoint();
    // One client per server, like an API and engines connected to different servers.
    let mut infras = Vec::new();
    for node in &cluster.nodes {
        let client = test_support::NatsEndpoint {
            url: format!("nats://127.0.0.1:{}", node.client_port),
            ..endpoint.clone()
        }
        .connect()
        .await?;
        infras.push(Infra::ensure(client).await?);
    }
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let infra = infras[w as usize % infras.len()].clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..EACH {
                infra.add_usage("alice", 1, 10).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let usage = infras[0].usage_of("alice").await?;
    assert_eq!(
        (usage.stored_runs, usage.log_bytes),
        (WRITERS * EACH, WRITERS * EACH * 10),
        "every increment counted once"
    );
    Ok(())
}
