//! The `metis-api` binary: configuration from the environment, then [`api::serve`];
//! `metis-api token <user>` prints a bearer token signed with the configured HS256 secret.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Metis API: the HTTP front of a workflow execution service. Settings come from the
/// environment (see the README's Settings table).
#[derive(Parser)]
#[command(name = "metis-api", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print a bearer token for USER, signed with AUTH_JWT_SECRET (or AUTH_JWT_SECRET_FILE),
    /// with AUTH_JWT_ISSUER / AUTH_JWT_AUDIENCE when set. For local use and tests; production
    /// tokens come from your identity provider.
    Token {
        /// The user (the token's `sub`).
        user: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_s: u64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Token { user, ttl_s }) = cli.command {
        return match token(&user, ttl_s) {
            Ok(t) => {
                println!("{t}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
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

fn token(user: &str, ttl_s: u64) -> anyhow::Result<String> {
    use anyhow::{Context, bail};
    api::extract::check_user_id(user).map_err(|m| anyhow::anyhow!("user '{user}': {m}"))?;
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let secret = match (var("AUTH_JWT_SECRET"), var("AUTH_JWT_SECRET_FILE")) {
        (Some(s), None) => s,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .with_context(|| format!("AUTH_JWT_SECRET_FILE: reading {path}"))?
            .trim_end_matches(['\n', '\r'])
            .to_owned(),
        (Some(_), Some(_)) => bail!("set only one of AUTH_JWT_SECRET and AUTH_JWT_SECRET_FILE"),
        (None, None) => bail!(
            "metis-api token signs with the HS256 secret: set AUTH_JWT_SECRET or AUTH_JWT_SECRET_FILE (the same the API verifies with)"
        ),
    };
    if secret.len() < 32 {
        bail!("the HS256 secret must be at least 32 bytes");
    }
    // The API would refuse a token that lives longer than it allows.
    let max_ttl = var("AUTH_JWT_MAX_TTL_S")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(api::auth::DEFAULT_MAX_TTL_S);
    if ttl_s > max_ttl {
        bail!("--ttl-s {ttl_s} is longer than the API accepts (AUTH_JWT_MAX_TTL_S = {max_ttl} s)");
    }
    api::auth::mint_hs256(
        secret.as_bytes(),
        user,
        std::time::Duration::from_secs(ttl_s),
        var("AUTH_JWT_ISSUER").as_deref(),
        var("AUTH_JWT_AUDIENCE").as_deref(),
    )
}
