//! SIGTERM and SIGINT: a clean exit that removes the instance's registration and keeps the
//! engine's config (so the API still accepts runs for it).

use anyhow::Result;
use common::EngineRegistration;
use common::nats::{engine_config_key, token};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use test_support::wait_for;

use crate::support::{Bed, TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_exit_zero_and_deregister() -> Result<()> {
    let bed = Bed::start("shutdown").await?;
    let config = bed.config("engine.yaml", |_| {})?;
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut engine = bed.engine(&format!("engine-{signal}"), &config).await?;
        let reg = bed
            .infra
            .engines
            .get(token(&engine.id))
            .await?
            .expect("registration");
        let reg: EngineRegistration = serde_json::from_slice(&reg)?;
        assert_eq!(
            (reg.id.as_str(), reg.name.as_str(), reg.version.as_str()),
            (engine.id.as_str(), "generic", "1")
        );

        let pid = engine.proc.pid().expect("pid");
        kill(Pid::from_raw(i32::try_from(pid)?), signal)?;
        wait_for(
            &format!("the engine to exit after {signal}"),
            TIMEOUT,
            || {
                let exited = engine.proc.has_exited();
                async move {
                    if exited {
                        Ok(())
                    } else {
                        Err("still running".to_owned())
                    }
                }
            },
        )
        .await?;
        let status = engine.proc.terminate(TIMEOUT).await?; // already reaped: returns its status
        assert!(status.success(), "{signal}: exited with {status}");
        assert!(
            bed.infra.engines.get(token(&engine.id)).await?.is_none(),
            "{signal}: registration left behind"
        );
        assert!(
            engine
                .events()
                .iter()
                .any(|e| e["message"] == "engine stopped"),
            "{signal}: no 'engine stopped' event"
        );
    }
    let spec = bed
        .infra
        .engine_configs
        .get(engine_config_key("generic", "1"))
        .await?
        .expect("engine config stays");
    let spec: serde_json::Value = serde_json::from_slice(&spec)?;
    assert_eq!(
        spec["commandTemplate"],
        "sh {workflow_url} {engine_params} {workflow_params}"
    );
    Ok(())
}
