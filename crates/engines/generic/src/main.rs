//! `metis-engine-generic`: runs any command-line workflow described by an engine.yaml.
//!
//! Everything (consuming runs, argv building, process supervision, cancel, shutdown) is the
//! shared runtime in the `engine` crate; this engine only names its service and keeps the
//! default command hook, so the argv is exactly what `commandTemplate` builds. Configuration
//! is by environment (`ENGINE_CONFIG_PATH`, `NATS_URL`, `HEALTH_PORT`, `SHUTDOWN_GRACE_MS`,
//! `HEARTBEAT_INTERVAL_MS`, `MAX_RUN_OUTPUT_BYTES`, `RUST_LOG`, `LOG_FORMAT`, `OTEL_EXPORTER_OTLP_ENDPOINT`); see `engine::settings`.

use std::process::ExitCode;

/// The generic engine: the runtime's defaults.
struct GenericEngine;

impl engine::Engine for GenericEngine {
    fn service_name(&self) -> &str {
        "metis-engine-generic"
    }
}

fn main() -> ExitCode {
    engine::main(GenericEngine)
}
