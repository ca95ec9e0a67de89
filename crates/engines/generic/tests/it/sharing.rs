//! Two instances of one engine share its consumer: each runs some of the work. Shutting them
//! down with runs in flight kills those runs and records SYSTEM_ERROR.

use anyhow::Result;
use common::State;
use serde_json::json;

use crate::support::{Bed, wait_gone};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_work_and_shutdown_fails_their_runs() -> Result<()> {
    let bed = Bed::start("sharing").await?;
    // One run at a time per instance: the second run can only go to the other instance.
    let config = bed.config("engine.yaml", |c| c.engine.max_concurrent_runs = 1)?;
    let fast = [("SHUTDOWN_GRACE_MS", "200")];
    let mut a = bed.engine_with("engine-a", &config, &fast).await?;
    let mut b = bed.engine_with("engine-b", &config, &fast).await?;
    assert_ne!(a.id, b.id);

    let first = bed.submit(bed.request("sleep.sh", json!({}))).await?;
    let second = bed.submit(bed.request("sleep.sh", json!({}))).await?;
    let r1 = bed
        .wait_state(first, "RUNNING", |s| s == State::Running)
        .await?;
    let r2 = bed
        .wait_state(second, "RUNNING", |s| s == State::Running)
        .await?;
    let mut owners = [
        r1.engine_id.clone().unwrap_or_default(),
        r2.engine_id.clone().unwrap_or_default(),
    ];
    owners.sort();
    let mut ids = [a.id.clone(), b.id.clone()];
    ids.sort();
    assert_eq!(owners, ids, "each instance runs one of the two runs");
    let runs = [
        bed.processes_of(first).await?,
        bed.processes_of(second).await?,
    ];

    for engine in [&mut a, &mut b] {
        let status = engine.stop().await?;
        assert!(
            status.success(),
            "{} exited with {status}",
            engine.proc.name
        );
    }
    for id in [first, second] {
        let rec = bed.record(id).await?;
        assert_eq!(rec.state, State::SystemError, "{rec:#?}");
        assert_eq!(
            rec.error.as_deref(),
            Some("engine shut down before the run finished")
        );
        assert_eq!(rec.run_log.expect("run log").signal, Some(9));
    }
    for run in &runs {
        wait_gone(run).await?;
    }
    Ok(())
}
