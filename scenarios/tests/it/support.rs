//! What every scenario shares: starting a stack, request bodies, and the snapshot check.

use std::time::Duration;

use harness::{Stack, StackOptions};
use serde_json::{Value, json};

/// Deadline for a run to reach a state.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Starts a stack for `scenario` with `engines` engine instances.
pub async fn stack(scenario: &str, engines: usize) -> anyhow::Result<Stack> {
    Stack::start(
        scenario,
        StackOptions {
            engines,
            ..StackOptions::default()
        },
    )
    .await
}

/// A request for the fixture workflow `script` (in `fixtures/workflows/`).
pub fn run_body(script: &str) -> Value {
    json!({
        "workflow_type": "SH",
        "workflow_type_version": "1",
        "workflow_url": test_support::workspace_root().join("fixtures/workflows").join(script).display().to_string(),
        "workflow_engine": "generic",
        "workflow_engine_version": "1",
    })
}
