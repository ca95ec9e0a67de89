//! `otlp-receiver`: the fake OTLP receiver as a process (see `otlp_receiver`).
//!
//! ```text
//! otlp-receiver [--grpc 127.0.0.1:4317] [--http 127.0.0.1:4318]
//! ```
//!
//! Port 0 picks a free port. On start it prints exactly one line to stdout, the bound
//! addresses as JSON (`{"grpc":"127.0.0.1:41234","http":"127.0.0.1:41235"}`), then serves until
//! SIGTERM or SIGINT and exits 0. Diagnostics go to stderr (`RUST_LOG`, default `info`).

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use otlp_receiver::Receiver;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// Fake OTLP receiver: keeps every span and serves it back over HTTP.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address for OTLP/gRPC.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4317")]
    grpc: SocketAddr,
    /// Address for OTLP/HTTP and the query API.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4318")]
    http: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let mut terminate = signal(SignalKind::terminate()).context("install a SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("install a SIGINT handler")?;

    let receiver = Receiver::start(args.grpc, args.http)
        .await
        .context("start the otlp receiver")?;
    let line = serde_json::to_string(&receiver.addresses()).context("encode the addresses")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .context("print the addresses")?;
    drop(stdout);
    tracing::info!(grpc = %receiver.grpc_addr(), http = %receiver.http_addr(), "otlp receiver serving");

    let which = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    };
    tracing::info!("{which}: shutting down");
    receiver
        .shutdown()
        .await
        .context("shut the otlp receiver down")?;
    Ok(())
}
