//! Nothing on a request path or a periodic task reads every run record: listings, counts and
//! the reaper go through the per-user and active indexes. Proved the way a full scan would be
//! caught: records written straight into the `metis_runs` bucket, with no index entry, are
//! invisible to `GET /runs`, `GET /runs?state=…` and `/service-info`, and the reaper leaves an
//! unindexed RUNNING record of a vanished engine alone — while it does end the indexed twin.

use common::infra::Infra;
use common::{RunId, RunRecord, State};
use serde_json::json;

use crate::support::{Stack, body_for, workflow};

/// A record of alice's in `state`, owned by a vanished engine.
fn record(state: State) -> anyhow::Result<RunRecord> {
    let request = serde_json::from_value(body_for(&workflow("ok.sh")))?;
    let mut rec = RunRecord::queued(RunId::new(), "alice".to_owned(), request);
    rec.state = state;
    rec.engine_id = Some("vanished-engine".to_owned());
    Ok(rec)
}

/// Writes `rec` into the runs bucket only: no index entry, as no Metis writer would.
async fn put_unindexed(infra: &Infra, rec: &RunRecord) -> anyhow::Result<()> {
    infra
        .runs
        .put(rec.run_id.to_string(), serde_json::to_vec(rec)?.into())
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_without_index_entries_are_never_read() -> anyhow::Result<()> {
    let stack = Stack::start("indexes").await?;
    stack.register_config_only().await?;
    let infra = stack.infra().await?;
    let alice = &stack.client;

    let hidden_done = record(State::Complete)?;
    let hidden_running = record(State::Running)?;
    put_unindexed(&infra, &hidden_done).await?;
    put_unindexed(&infra, &hidden_running).await?;
    // The control: the same RUNNING record of a vanished engine, written as Metis writes.
    let indexed = record(State::Running)?;
    infra.create_run(&indexed).await?;

    // The reaper ends the indexed one (its engine is gone) …
    alice
        .wait_for_state(
            &indexed.run_id.to_string(),
            &["SYSTEM_ERROR"],
            std::time::Duration::from_secs(20),
        )
        .await?;
    // … and the counts of its passes are the indexed runs' alone: an unindexed RUNNING
    // record a full scan had read would stay counted.
    test_support::wait_for(
        "/service-info to count only the indexed run",
        std::time::Duration::from_secs(10),
        || async {
            let info = alice
                .get("/service-info")
                .await
                .map_err(|e| e.to_string())?;
            let counts = info.body["system_state_counts"].clone();
            if counts == json!({"SYSTEM_ERROR": 1}) {
                Ok(())
            } else {
                Err(counts.to_string())
            }
        },
    )
    .await?;
    let (still, _) = infra
        .get_run(&hidden_running.run_id)
        .await?
        .expect("the unindexed record");
    assert_eq!(
        still.state,
        State::Running,
        "the reaper read no unindexed record"
    );

    let listed = alice.get("/runs?page_size=1000").await?.body;
    let ids: Vec<&str> = listed["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["run_id"].as_str())
        .collect();
    assert_eq!(ids, [indexed.run_id.to_string()], "GET /runs: {listed}");
    for state in ["COMPLETE", "RUNNING"] {
        let by_state = alice.get(&format!("/runs?state={state}")).await?.body;
        assert_eq!(by_state["runs"], json!([]), "GET /runs?state={state}");
    }
    Ok(())
}
