//! `just bench`: measurements, never assertions.
//!
//! 1. **Stack start-up** per backend: time from the start of [`crate::Stack::start`] to a
//!    stack that accepts runs (NATS, receiver, API and one engine ready), broken down by the
//!    harness's timeline steps (warm build: the binaries and images exist already).
//! 2. **Receiver ingest** over OTLP/gRPC: a fixed load (`--spans`, in batches of `--batch`)
//!    sent by four concurrent tonic clients to (a) this project's receiver, which keeps every span
//!    queryable, (b) the `fake-opentelemetry-collector` crate's server (drained concurrently),
//!    and (c) a tonic `TraceService` that only decodes and counts — the practical limit — side
//!    by side in one run; then (a) and (c) again with every export gzip-compressed.
//! 3. **The service** ([`crate::bench_runs`]): `GET /runs` against history, O(page) reads (a
//!    log page of one stream, a state-filtered listing, `/service-info`) at 0 and 100k,
//!    `POST /runs` throughput against its floor, and how long crashes take to be repaired.
//! 4. **The contributor's loop**: a cold `just test-e2e` in a fresh clone, the edit-one-file
//!    loop and an unchanged rerun ([`cold_start`]).
//! 5. **Chaos** ([`chaos_rate`], [`chaos_shrink`]): schedules explored per minute (10-second
//!    schedules of seeds 1–3, stack start and check included) per backend and topology, and
//!    how long the shrinker takes to cut a violating schedule down (the planted duplicate line
//!    of `harness::chaos::Planted`: the engine's injected bugs exist in debug builds only).
//! 6. **Shards** ([`shard_times`]): the archive build, the whole suite as one shard, and each
//!    of 3 shards run in sequence from the same archive, per backend — the longest shard
//!    against the unsharded run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use crate::topology::Topology;
use crate::{Stack, StackOptions};

/// The suite time of the cluster scenarios on `backend`: one `cargo test` of them (debug
/// builds, as CI runs them), wall clock.
fn cluster_suite_time(backend: &str) -> Result<()> {
    let t = Instant::now();
    let status = test_support::cargo()
        .args(["test", "-q", "-p", "scenarios", "--test", "it", "--"])
        .args(["cluster", "two_apis_two_engines", "--test-threads", "4"])
        .env("E2E_BACKEND", backend)
        .env("E2E_QUIET", "1")
        .current_dir(test_support::workspace_root())
        .status()?;
    anyhow::ensure!(
        status.success(),
        "the cluster scenarios failed on {backend}"
    );
    println!(
        "cluster scenarios (cluster_*, two_apis_two_engines), {backend} backend: {:.1}s wall clock",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The contributor's loop, timed: a fresh clone of this checkout's `HEAD` with an empty
/// `target/` runs `just test-e2e` (cold: its own tools virtualenv, every crate built), then
/// again after editing one file of the API (the edit-one-file loop), then once more unchanged.
/// The shared cargo registry and the global tools (`cargo-insta`, the e2e images) are reused,
/// as on a contributor's second clone; the output goes to `target/bench/cold-start-*.log`.
fn cold_start(backend: &str) -> Result<()> {
    let root = test_support::workspace_root();
    let clone = std::env::temp_dir().join(format!("metis-cold-start-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&clone);
    let logs = root.join("target/bench");
    std::fs::create_dir_all(&logs)?;
    let status = std::process::Command::new("git")
        .args(["clone", "-q"])
        .arg(&root)
        .arg(&clone)
        .status()
        .context("git clone")?;
    anyhow::ensure!(status.success(), "git clone of {} failed", root.display());
    // The clone must find none of this checkout's tools (its setup installs its own).
    let own_tools = root.join("target/tools/venv/bin");
    let path = std::env::join_paths(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .filter(|p| *p != own_tools),
    )?;
    let run = |label: &str| -> Result<f64> {
        let log = logs.join(format!("cold-start-{label}.log"));
        let out = std::fs::File::create(&log)?;
        let t = Instant::now();
        let status = test_support::without_cargo_env("just")
            .arg("test-e2e")
            .current_dir(&clone)
            .env("PATH", &path)
            .env("E2E_BACKEND", backend)
            .env("E2E_QUIET", "1")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("METIS_SKIP_BUILD")
            .stdout(out.try_clone()?)
            .stderr(out)
            .status()
            .context("running `just test-e2e` (is `just` installed?)")?;
        let secs = t.elapsed().as_secs_f64();
        anyhow::ensure!(
            status.success(),
            "`just test-e2e` ({label}) failed in the fresh clone; see {}",
            log.display()
        );
        Ok(secs)
    };
    let result = (|| -> Result<(f64, f64, f64)> {
        let cold = run("cold")?;
        let edited = clone.join("crates/api/src/lib.rs");
        let mut text = std::fs::read_to_string(&edited)?;
        text.push_str("\n// edited by `just bench` (the edit-one-file loop)\n");
        std::fs::write(&edited, text)?;
        let edit = run("edit")?;
        let unchanged = run("unchanged")?;
        Ok((cold, edit, unchanged))
    })();
    let _ = std::fs::remove_dir_all(&clone);
    let (cold, edit, unchanged) = result?;
    println!("contributor's loop, `just test-e2e` in a fresh clone ({backend} backend):");
    println!("  cold (empty target/, tools venv, every crate built): {cold:>7.1}s");
    println!("  after editing one file of metis-api:                 {edit:>7.1}s");
    println!("  unchanged (the suite alone):                         {unchanged:>7.1}s");
    Ok(())
}

/// Options of `e2e bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Stack start-ups to time per backend.
    #[arg(long, default_value_t = 3)]
    pub starts: usize,
    /// Backends to time.
    #[arg(long, value_delimiter = ',', default_value = "local,docker")]
    pub backends: Vec<String>,
    /// Spans sent to each receiver.
    #[arg(long, default_value_t = 200_000)]
    pub spans: usize,
    /// Spans per export request.
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    /// `POST /runs` requests in the throughput measurement.
    #[arg(long, default_value_t = 2000)]
    pub posts: usize,
    /// Which measurements to make.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "startup,ingest,listing,reads,create,crash,sandbox,cluster,chaos,shards,coldstart"
    )]
    pub only: Vec<String>,
}

/// Runs every measurement and prints a report.
pub async fn run(args: BenchArgs) -> Result<()> {
    let on = |s: &str| args.only.iter().any(|o| o == s);
    if on("startup") {
        for backend in &args.backends {
            for topology in [Topology::Single, Topology::Cluster] {
                start_up(backend, topology, args.starts).await?;
            }
        }
    }
    if on("ingest") {
        ingest(args.spans, args.batch).await?;
    }
    if on("listing") {
        crate::bench_runs::listing_against_history().await?;
    }
    if on("reads") {
        crate::bench_runs::reads_against_volume().await?;
    }
    if on("create") {
        for topology in [Topology::Single, Topology::Cluster] {
            crate::bench_runs::create_throughput(args.posts, topology).await?;
        }
    }
    if on("sandbox") {
        crate::bench_runs::sandbox_cost(20).await?;
    }
    if on("cluster") {
        for backend in &args.backends {
            cluster_suite_time(backend)?;
        }
    }
    if on("crash") {
        crate::bench_runs::crash_bounds(false).await?;
        crate::bench_runs::crash_bounds(true).await?;
    }
    if on("chaos") {
        for backend in &args.backends {
            for topology in [Topology::Single, Topology::Cluster] {
                chaos_rate(backend, topology).await?;
            }
        }
        chaos_shrink().await?;
    }
    if on("shards") {
        for backend in &args.backends {
            shard_times(backend)?;
        }
    }
    if on("coldstart") {
        cold_start("local")?;
    }
    Ok(())
}

/// Schedules explored per minute: seeds 1–3, 10 seconds each, one stack each (start, play,
/// heal, check), on `backend` and `topology`.
async fn chaos_rate(backend: &str, topology: Topology) -> Result<()> {
    use crate::chaos::{Schedule, run};
    let (backend_kind, _) =
        crate::backend::choose(Some(backend), crate::backend::docker_available)?;
    let t = Instant::now();
    let mut steps = 0;
    let seeds = [1, 2, 3];
    for seed in seeds {
        let schedule = Schedule::generate_for(seed, std::time::Duration::from_secs(10), topology);
        steps += schedule.steps.len();
        let outcome = run(
            &format!("bench-chaos-{backend}-{topology}-{seed}"),
            &schedule,
            Some(StackOptions {
                engines: 2,
                backend: Some(backend_kind),
                ..StackOptions::default()
            }),
        )
        .await?;
        anyhow::ensure!(
            outcome.violations.is_empty(),
            "chaos seed {seed} ({backend}, {topology}) broke invariants: {:#?}",
            outcome.violations
        );
    }
    let minutes = t.elapsed().as_secs_f64() / 60.0;
    println!(
        "chaos, {backend} backend, {topology}: {} schedules of 10 s ({steps} steps) in {:.1}s: \
         {:.2} schedules/min, {:.0} steps/min",
        seeds.len(),
        t.elapsed().as_secs_f64(),
        seeds.len() as f64 / minutes,
        steps as f64 / minutes
    );
    Ok(())
}

/// The sharded suite on `backend`: the archive build, the suite as one shard, and each of 3
/// shards in sequence from the same archive folder (`target/bench/e2e-archive`), wall clock.
/// A failing test is reported, not fatal: the times are what is measured.
fn shard_times(backend: &str) -> Result<()> {
    let root = test_support::workspace_root();
    let dir = root.join("target/bench/e2e-archive");
    let t = Instant::now();
    crate::shards::archive(&dir, None)?;
    let archive_secs = t.elapsed().as_secs_f64();
    let env = [("E2E_BACKEND", backend), ("E2E_QUIET", "1")];
    let run = |k: usize, n: usize| -> Result<f64> {
        let out = root.join(format!("target/bench/shards-{backend}-{n}/{k}"));
        let t = Instant::now();
        let passed = crate::shards::shard_with(k, n, &dir, &root, &out, &env)?;
        if !passed {
            println!(
                "(shard {k}/{n} on {backend} had a failing test: see {})",
                out.display()
            );
        }
        Ok(t.elapsed().as_secs_f64())
    };
    let whole = run(1, 1)?;
    let shards: Vec<f64> = (1..=3).map(|k| run(k, 3)).collect::<Result<_>>()?;
    let longest = shards.iter().copied().fold(0.0, f64::max);
    println!(
        "shards, {backend} backend: archive build {archive_secs:.1}s; unsharded suite {whole:.1}s; \
         3 shards {} — the longest is {:.0}% of the unsharded run",
        shards
            .iter()
            .map(|s| format!("{s:.1}s"))
            .collect::<Vec<_>>()
            .join(" / "),
        100.0 * longest / whole.max(0.001)
    );
    Ok(())
}

/// How long the shrinker takes: the first 3-second schedule (local, one NATS) that creates an
/// `ok.sh` run among faults, with a duplicate output line planted, shrunk to its minimum.
async fn chaos_shrink() -> Result<()> {
    use crate::chaos::{Planted, Schedule, shrink_planted};
    let schedule = (1..100)
        .map(|seed| Schedule::generate(seed, std::time::Duration::from_secs(3)))
        .find(|s| {
            s.steps.iter().any(|s| s.action.is_fault())
                && s.steps.iter().any(|s| {
                    let a = s.to_string_action();
                    a.starts_with("create") && a.ends_with("ok.sh")
                })
        })
        .context("no seed below 100 creates an ok.sh run among faults")?;
    let options = || {
        Some(StackOptions {
            engines: 2,
            backend: Some(crate::backend::Backend::Local),
            ..StackOptions::default()
        })
    };
    let t = Instant::now();
    let small = shrink_planted(
        "bench-chaos-shrink",
        &schedule,
        options,
        40,
        Some(Planted::DuplicateLogLine),
    )
    .await?;
    println!(
        "chaos shrink, local backend: seed {} from {} steps to {} in {:.1}s",
        schedule.seed,
        schedule.steps.len(),
        small.steps.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn start_up(backend: &str, topology: Topology, starts: usize) -> Result<()> {
    let (backend_kind, _) =
        crate::backend::choose(Some(backend), crate::backend::docker_available)?;
    let options = StackOptions {
        backend: Some(backend_kind),
        nats: Some(topology),
        ..StackOptions::default()
    };
    // Warm-up: builds binaries and images once.
    drop(Stack::start("bench-warmup", options.clone()).await?);
    let mut totals = Vec::new();
    let mut last_steps = Vec::new();
    for i in 0..starts {
        let t = Instant::now();
        let stack = Stack::start(
            &format!("bench-start-{backend}-{topology}-{i}"),
            options.clone(),
        )
        .await?;
        totals.push(t.elapsed());
        last_steps = stack.timeline.lines();
    }
    totals.sort();
    println!(
        "stack start-up, {backend} backend, NATS {topology} ({starts} starts, warm): median {:.3}s, min {:.3}s, max {:.3}s",
        totals[totals.len() / 2].as_secs_f64(),
        totals[0].as_secs_f64(),
        totals[totals.len() - 1].as_secs_f64()
    );
    println!("  steps of the last start:");
    for l in last_steps.iter().filter(|l| l.contains('✓')) {
        println!("    {l}");
    }
    Ok(())
}

fn request(batch: usize, n: usize) -> ExportTraceServiceRequest {
    let attr = |k: &str, v: &str| KeyValue {
        key: k.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_owned())),
        }),
        ..Default::default()
    };
    let spans = (0..batch)
        .map(|i| Span {
            trace_id: ((n * batch + i) as u128).to_be_bytes().to_vec(),
            span_id: ((n * batch + i) as u64 + 1).to_be_bytes().to_vec(),
            name: "workflow_run".to_owned(),
            kind: 5,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: vec![
                attr("run_id", "0193a0c4-0000-7000-8000-000000000000"),
                attr("state", "COMPLETE"),
            ],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attr("service.name", "bench")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Sends the load over `CLIENTS` concurrent streams of one connection (gzip-compressed when
/// `gzip`); returns spans/s.
async fn send(endpoint: String, spans: usize, batch: usize, gzip: bool) -> Result<f64> {
    const CLIENTS: usize = 4;
    let mut client = TraceServiceClient::connect(endpoint)
        .await
        .context("connecting to the receiver")?
        .max_encoding_message_size(64 << 20);
    if gzip {
        client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
    }
    let mut lanes: Vec<Vec<ExportTraceServiceRequest>> = vec![Vec::new(); CLIENTS];
    for n in 0..spans.div_ceil(batch) {
        lanes[n % CLIENTS].push(request(batch, n));
    }
    let t = Instant::now();
    let tasks = lanes.into_iter().map(|lane| {
        let mut client = client.clone();
        async move {
            for r in lane {
                client.export(r).await.context("exporting")?;
            }
            anyhow::Ok(())
        }
    });
    for r in futures::future::join_all(tasks).await {
        r?;
    }
    Ok((spans.div_ceil(batch) * batch) as f64 / t.elapsed().as_secs_f64())
}

#[derive(Default)]
struct CountOnly(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for CountOnly {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = req
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(n as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn ingest(spans: usize, batch: usize) -> Result<()> {
    let receiver = otlp_receiver::Receiver::start_local().await?;
    let ours = send(receiver.grpc_endpoint(), spans, batch, false).await?;
    let stored = receiver.client().stats().await?.spans;
    let receiver_gzip = otlp_receiver::Receiver::start_local().await?;
    let ours_gzip = send(receiver_gzip.grpc_endpoint(), spans, batch, true).await?;
    let stats_gzip = receiver_gzip.client().stats().await?;

    let fake = fake_collector(spans, batch).await?;

    let counted = Arc::new(AtomicU64::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let svc = TraceServiceServer::new(CountOnly(counted.clone()))
        .max_decoding_message_size(64 << 20)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream_listener(listener)),
    );
    let baseline = send(format!("http://{addr}"), spans, batch, false).await?;
    let baseline_gzip = send(format!("http://{addr}"), spans, batch, true).await?;
    server.abort();

    println!(
        "receiver ingest over OTLP/gRPC, {spans} spans in batches of {batch}, 4 concurrent clients:"
    );
    println!(
        "  otlp-receiver (keeps every span queryable): {ours:>10.0} spans/s ({stored} stored)"
    );
    println!(
        "  fake-opentelemetry-collector:               {:>10.0} spans/s ({} received)",
        fake.0, fake.1
    );
    println!(
        "  decode-and-count tonic TraceService:        {baseline:>10.0} spans/s ({} counted)",
        counted.load(Ordering::Relaxed)
    );
    println!(
        "  ratio: {:.2} of the decode-only rate (aim: at least 0.5)",
        ours / baseline
    );
    println!("  with gzip (every export compressed; both sides inflate):");
    println!(
        "    otlp-receiver:                            {ours_gzip:>10.0} spans/s ({} stored, {} exports compressed)",
        stats_gzip.spans, stats_gzip.compressed_exports
    );
    println!("    decode-and-count tonic TraceService:      {baseline_gzip:>10.0} spans/s");
    println!(
        "    ratio: {:.2} of the decode-only rate with gzip (aim: at least 0.5)",
        ours_gzip / baseline_gzip
    );
    Ok(())
}

/// Rate and count for the `fake-opentelemetry-collector` server, its channel drained by a task.
async fn fake_collector(spans: usize, batch: usize) -> Result<(f64, usize)> {
    let mut fake = fake_opentelemetry_collector::FakeCollectorServer::start()
        .await
        .map_err(|e| anyhow::anyhow!("starting fake-opentelemetry-collector: {e}"))?;
    let endpoint = fake.endpoint();
    let total = spans.div_ceil(batch) * batch;
    let drain = tokio::spawn(async move {
        let mut got = 0;
        while got < total {
            let more = fake
                .exported_spans(1, std::time::Duration::from_secs(30))
                .await;
            if more.is_empty() {
                break;
            }
            got += more.len();
        }
        got
    });
    let rate = send(endpoint, spans, batch, false).await?;
    Ok((rate, drain.await?))
}

fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    })
}
