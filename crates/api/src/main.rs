//! The `metis-api` binary: configuration from the environment, then [`api::serve`].

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let guard = telemetry::init_tracing("metis-api");
    let result = match api::Config::from_env() {
        Ok(config) => api::serve(config).await,
        Err(e) => Err(e),
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            telemetry::tracing::error!(error = format!("{e:#}"), "metis-api failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    drop(guard);
    code
}
