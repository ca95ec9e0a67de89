//! The custom engine shown in the book's chapter "The Engine trait and custom engines".
//!
//! It lives here, and not only in the chapter, so that `cargo clippy --all-targets` (and so
//! `just lint`) compiles it against the real `engine` crate: the example cannot drift from
//! the trait it implements. The chapter includes the region between the ANCHOR markers.

// ANCHOR: engine
use std::process::ExitCode;

use engine::{Engine, EngineError, RunContext};

/// Runs Nextflow pipelines: the shared runtime, plus a trace file in every run's workdir.
struct NextflowEngine;

impl Engine for NextflowEngine {
    fn service_name(&self) -> &str {
        "metis-engine-nextflow"
    }

    /// Appends `-with-trace <workdir>/trace.txt` to the argv `commandTemplate` built.
    fn command(
        &self,
        ctx: &RunContext<'_>,
        mut argv: Vec<String>,
    ) -> Result<Vec<String>, EngineError> {
        if argv.first().map(String::as_str) != Some("nextflow") {
            return Err(EngineError::Command(format!(
                "commandTemplate must start with `nextflow`, got {argv:?}"
            )));
        }
        argv.push("-with-trace".to_owned());
        argv.push(ctx.workdir.join("trace.txt").display().to_string());
        Ok(argv)
    }
}

fn main() -> ExitCode {
    // Starts the group keeper when re-executed as one, else a Tokio runtime and `engine::run`.
    engine::main(NextflowEngine)
}
// ANCHOR_END: engine
