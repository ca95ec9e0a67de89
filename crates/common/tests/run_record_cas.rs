//! Every state change of a run is a compare-and-set on its KV revision
//! (`Infra::update_run`), against a real `nats-server -js`: engines racing to claim one
//! QUEUED run have exactly one winner, and a move the lifecycle does not allow is refused
//! whoever asks for it.

use common::infra::{Decision, Infra};
use common::{RunId, RunRecord, State};

async fn queued_run(infra: &Infra) -> anyhow::Result<RunId> {
    let request = serde_json::from_value(serde_json::json!({
        "workflow_type": "SH",
        "workflow_type_version": "1",
        "workflow_url": "/bin/true",
        "workflow_engine": "generic",
        "workflow_engine_version": "1",
    }))?;
    let id = RunId::new();
    infra
        .create_run(&RunRecord::queued(id, "alice".to_owned(), request))
        .await?;
    Ok(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_claims_on_one_run_have_one_winner() -> anyhow::Result<()> {
    const ENGINES: usize = 8;
    let logs = tempfile::tempdir()?;
    let nats = test_support::NatsServer::start(logs.path()).await?;
    let infra = Infra::ensure(nats.connect().await?).await?;
    let id = queued_run(&infra).await?;
    let mut claims = Vec::new();
    for n in 0..ENGINES {
        // Each engine with a connection of its own, as separate processes would have.
        let infra = Infra::ensure(nats.connect().await?).await?;

        claims.push(tokio::spawn(async move {
            let me = format!("engine-{n}");
            let won = infra
                .update_run(&id, |rec| match rec {
                    Some(rec) if rec.state == State::Queued => {
                        rec.state = State::Initializing;
                        rec.engine_id = Some(me.clone());
                        Decision::Write(true)
                    }
                    _ => Decision::Keep(false),
                })
                .await?;
            anyhow::Ok((me, won))
        }));
    }
    let mut winners = Vec::new();
    for claim in claims {
        let (me, won) = claim.await??;
        if won {
            winners.push(me);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one claim wins: {winners:?}");
    let (rec, _) = infra.get_run(&id).await?.expect("the record");
    assert_eq!(rec.state, State::Initializing);
    assert_eq!(rec.engine_id.as_deref(), Some(winners[0].as_str()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_the_lifecycle_forbids_is_refused() -> anyhow::Result<()> {
    let logs = tempfile::tempdir()?;
    let nats = test_support::NatsServer::start(logs.path()).await?;
    let infra = Infra::ensure(nats.connect().await?).await?;
    let id = queued_run(&infra).await?;
    let set = |state: State| {
        move |rec: Option<&mut RunRecord>| {
            if let Some(rec) = rec {
                rec.state = state;
            }
            Decision::Write(())
        }
    };
    infra.update_run(&id, set(State::Canceled)).await?;
    let error = infra
        .update_run(&id, set(State::Running))
        .await
        .expect_err("CANCELED -> RUNNING is no move of the lifecycle");
    assert!(
        error.to_string().contains("refusing the transition"),
        "{error}"
    );
    let (rec, _) = infra.get_run(&id).await?.expect("the record");
    assert_eq!(rec.state, State::Canceled, "nothing was written");
    Ok(())
}
