//! One stack per test: NATS, the API, optionally engines, in a fresh temp folder.

use std::path::PathBuf;

use anyhow::Result;
use common::infra::Infra;
use serde_json::{Value, json};
use test_support::metis::{ApiClient, Service, start_api, start_engine};
use test_support::{NatsServer, log_dir, workspace_root};

pub struct Stack {
    pub nats: NatsServer,
    /// Held so the API process lives as long as the stack.
    pub api: Service,
    pub client: ApiClient,
    pub engines: Vec<Service>,
    pub dir: tempfile::TempDir,
    pub logs: PathBuf,
}

impl Stack {
    /// NATS and the API, no engine.
    pub async fn start(name: &str) -> Result<Self> {
        Self::start_with(name, &[]).await
    }

    /// Like [`Stack::start`], with extra settings for the API (`AUTH_*` replaces the default
    /// HS256 secret).
    pub async fn start_with(name: &str, extra: &[(&str, String)]) -> Result<Self> {
        let logs = log_dir(&format!("api-{name}"));
        let nats = NatsServer::start(&logs).await?;
        let mut env = vec![
            ("REAPER_INTERVAL_MS", "200".to_owned()),
            ("ENGINE_TTL_MS", "1500".to_owned()),
        ];
        env.extend(extra.iter().cloned());
        let api = start_api(&nats.endpoint(), &logs, &env).await?;
        let client = ApiClient::new(&api.url);
        Ok(Self {
            nats,
            api,
            client,
            engines: Vec::new(),
            dir: tempfile::tempdir()?,
            logs,
        })
    }

    /// The engine config used by these tests, written into the temp folder.
    pub fn engine_config(&self) -> Result<PathBuf> {
        let path = self.dir.path().join("engine.yaml");
        if !path.exists() {
            std::fs::write(
                &path,
                ENGINE_YAML
                    .replace(
                        "WORKDIR",
                        &self.dir.path().join("runs").display().to_string(),
                    )
                    .replace(
                        "WORKFLOWS",
                        &workspace_root()
                            .join("fixtures/workflows")
                            .display()
                            .to_string(),
                    )
                    .replace("SCRIPTS", &self.scripts_dir().display().to_string()),
            )?;
        }
        Ok(path)
    }

    /// Starts one more engine instance.
    pub async fn start_engine(&mut self) -> Result<()> {
        let config = self.engine_config()?;
        let name = format!("engine-{}", self.engines.len() + 1);
        let e = start_engine(
            &name,
            &config,
            &self.nats.endpoint(),
            &self.logs,
            &[("HEARTBEAT_INTERVAL_MS", "250".to_owned())],
        )
        .await?;
        self.engines.push(e);
        Ok(())
    }

    /// Registers the engine config in NATS the way an engine does, without running one.
    pub async fn register_config_only(&self) -> Result<()> {
        let infra = self.infra().await?;
        let cfg = common::FullEngineConfig::load(&self.engine_config()?)?;
        infra
            .engine_configs
            .put(
                common::nats::engine_config_key(&cfg.engine.name, &cfg.engine.version),
                serde_json::to_vec(&cfg.engine)?.into(),
            )
            .await?;
        Ok(())
    }

    /// Where [`Stack::script`] writes (an allowed workflow root of the test engine).
    pub fn scripts_dir(&self) -> PathBuf {
        self.dir.path().join("scripts")
    }

    /// Writes an executable shell script into the scripts folder and returns its path.
    pub fn script(&self, name: &str, body: &str) -> Result<String> {
        std::fs::create_dir_all(self.scripts_dir())?;
        let path = self.scripts_dir().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n"))?;
        Ok(path.display().to_string())
    }

    pub async fn infra(&self) -> Result<Infra> {
        Ok(Infra::ensure(self.nats.connect().await?).await?)
    }

    /// Messages waiting in the run stream.
    pub async fn queued_messages(&self) -> Result<u64> {
        let infra = self.infra().await?;
        let mut s = infra.js.get_stream(common::nats::RUNS_STREAM).await?;
        Ok(s.info().await?.state.messages)
    }
}

pub const ENGINE_YAML: &str = r#"
engine:
  name: generic
  version: "1"
  workflowTypes: [SH]
  workflowTypeVersions: ["1"]
  commandTemplate: "sh {workflow_url} {engine_params} {workflow_params}"
  maxConcurrentRuns: 4
  engineParams:
    unknownParamsBehavior: reject
    validatedParams:
      - names: [repeat]
        cliFlag: --repeat
        type: int
        validate: [{type: range, min: 1, max: 10}]
  deniedParams:
    - pattern: exec
      reason: runs arbitrary code
  allowedWorkflowRoots: [WORKFLOWS, SCRIPTS]
runs:
  env:
    DECLARED: "from engine.yaml"
  workdir:
    base: WORKDIR
  cancelGracePeriodMs: 500
"#;

/// A workflow script from `fixtures/workflows/`.
pub fn workflow(name: &str) -> String {
    workspace_root()
        .join("fixtures/workflows")
        .join(name)
        .display()
        .to_string()
}

/// A valid request body for the fixture `script`.
pub fn run_body(script: &str) -> Value {
    body_for(&workflow(script))
}

/// A valid request body for a script at `path`.
pub fn body_for(path: &str) -> Value {
    json!({
        "workflow_type": "SH",
        "workflow_type_version": "1",
        "workflow_url": path,
        "workflow_engine": "generic",
        "workflow_engine_version": "1",
        "tags": {"suite": "api"}
    })
}
