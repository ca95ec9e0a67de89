//! `just bench`, the service's part: what the faults issue asks to measure, side by side with
//! its baselines, on the local backend with release builds. Measurements, never assertions.
//!
//! 1. **`GET /runs` against history**: median latency for a user with no runs and a user with
//!    50, with 0, 10 000 and 100 000 other users' finished runs stored (aim: at most 1.5× from
//!    0 to 100k); `GET /service-info` beside it. The history is seeded the way the service
//!    stores a finished run (its user index entry, its record, its count), directly in NATS,
//!    because 100k runs through the API would take minutes.
//! 2. **`POST /runs` throughput** from one concurrent client (`CONCURRENCY` requests in
//!    flight), beside the floor: the same KV create and JetStream publishes the API makes per
//!    run (its two index entries, the record, the run message) made directly with async-nats
//!    at the same concurrency (aim: at least 0.5 of the floor); one create + one publish per
//!    run is shown beside it for scale.
//! 3. **Time to finish what a crash left**: from an engine's SIGKILL to its run being
//!    SYSTEM_ERROR, and from an API's SIGKILL (with QUEUED runs it stored but never
//!    published) to every one of them being dispatched and claimed — with the production
//!    timings and with the harness's short ones.
//! 4. **What the sandbox costs a run** ([`sandbox_cost`]): `ok.sh` sandboxed and unsandboxed,
//!    start-to-first-output and create-to-COMPLETE, side by side.
//! 5. **O(page) reads** ([`reads_against_volume`]): a one-stream log page, a state-filtered
//!    listing and `/service-info`, each at 0 and at 100 000 lines or runs.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::infra::Infra;
use common::nats;
use common::{RunId, RunRecord, RunRequest, State};
use futures::StreamExt;
use serde_json::json;

use crate::backend::Backend;
use crate::topology::Topology;
use crate::{Stack, StackOptions};

/// Requests in flight in the throughput measurement.
const CONCURRENCY: usize = 64;

fn body(script: &str) -> serde_json::Value {
    json!({
        "workflow_type": "SH", "workflow_type_version": "1",
        "workflow_url": test_support::workspace_root().join("fixtures/workflows").join(script).display().to_string(),
        "workflow_engine": "generic", "workflow_engine_version": "1",
    })
}

async fn stack(name: &str, engines: usize, production: bool) -> Result<Stack> {
    stack_on(name, engines, production, Topology::Single).await
}

async fn stack_on(
    name: &str,
    engines: usize,
    production: bool,
    topology: Topology,
) -> Result<Stack> {
    Stack::start(
        name,
        StackOptions {
            engines,
            backend: Some(Backend::Local),
            production_timings: production,
            nats: Some(topology),
            ..StackOptions::default()
        },
    )
    .await
}

async fn median_ms(client: &test_support::metis::ApiClient, path: &str, n: usize) -> Result<f64> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = client.get(path).await?;
        anyhow::ensure!(r.status == 200, "GET {path}: {} {}", r.status, r.body);
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[n / 2].as_secs_f64() * 1000.0)
}

/// Stores `n` finished runs of 100 other users, as the service leaves them.
async fn seed_history(infra: &Infra, from: usize, n: usize) -> Result<()> {
    let request: RunRequest = serde_json::from_value(body("ok.sh"))?;
    let results: Vec<Result<()>> = futures::stream::iter(from..from + n)
        .map(|i| {
            let infra = infra.clone();
            let request = request.clone();
            async move {
                let id = RunId::new();
                let user = format!("other-{}", i % 100);
                let mut rec = RunRecord::queued(id, user.clone(), request);
                rec.state = State::Complete;
                let index = infra
                    .js
                    .publish(nats::user_run_subject(&user, &id), bytes::Bytes::new())
                    .await?;
                index.await?;
                infra
                    .runs
                    .create(id.to_string(), serde_json::to_vec(&rec)?.into())
                    .await?;
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(nats::MSG_ID, id.to_string().as_str());
                infra
                    .js
                    .publish_with_headers(
                        nats::finished_subject(State::Complete),
                        headers,
                        bytes::Bytes::new(),
                    )
                    .await?
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Measurement 1: `GET /runs` and `GET /service-info` against history.
pub async fn listing_against_history() -> Result<()> {
    let s = stack("bench-listing", 1, true).await?;
    let infra = Infra::ensure(s.infra.nats_endpoint.connect().await?)
        .await
        .context("opening the stack's streams")?;
    let fifty = s.client.as_user(Some("bench-50"));
    for _ in 0..50 {
        fifty.create_run(&body("ok.sh")).await?;
    }
    let empty = s.client.as_user(Some("bench-empty"));
    println!(
        "GET /runs against history (local backend, release build; median of 50 requests, ms):"
    );
    println!("  other runs stored | empty user | user with 50 runs | GET /service-info");
    let mut first: Option<(f64, f64)> = None;
    let mut stored = 0;
    for target in [0usize, 10_000, 100_000] {
        if target > stored {
            let t = Instant::now();
            seed_history(&infra, stored, target - stored).await?;
            s.timeline.note(format!(
                "seeded {} finished runs in {:.1}s",
                target - stored,
                t.elapsed().as_secs_f64()
            ));
            stored = target;
        }
        let e = median_ms(&empty, "/runs", 50).await?;
        let f = median_ms(&fifty, "/runs?page_size=100", 50).await?;
        let i = median_ms(&s.client, "/service-info", 20).await?;
        println!("  {target:>17} | {e:>10.2} | {f:>17.2} | {i:>17.2}");
        first.get_or_insert((e, f));
        if target == 100_000
            && let Some((e0, f0)) = first
        {
            println!(
                "  ratio 100k/0: empty user {:.2}, user with 50 runs {:.2} (aim: at most 1.5)",
                e / e0,
                f / f0
            );
        }
    }
    Ok(())
}

/// Measurement 2: `POST /runs` throughput beside its floor.
pub async fn create_throughput(posts: usize, topology: Topology) -> Result<()> {
    let mut s = stack_on(&format!("bench-create-{topology}"), 0, true, topology).await?;
    // The API validates against the registered config; register it as an engine would.
    let infra = Infra::ensure(s.infra.nats_endpoint.connect().await?).await?;
    let config = common::FullEngineConfig::load(&s.engine_config)?;
    infra
        .engine_configs
        .put(
            nats::engine_config_key(&config.engine.name, &config.engine.version),
            serde_json::to_vec(&config.engine)?.into(),
        )
        .await?;
    let body = body("ok.sh");
    let t = Instant::now();
    let pings: Vec<bool> = futures::stream::iter(0..posts)
        .map(|_| {
            let client = s.client.clone();
            async move { client.get("/healthz").await.is_ok_and(|r| r.status == 200) }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let http = pings.iter().filter(|ok| **ok).count() as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let results: Vec<bool> = futures::stream::iter(0..posts)
        .map(|_| {
            let client = s.client.clone();
            let body = body.clone();
            async move { client.create_run(&body).await.is_ok() }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let api = results.iter().filter(|ok| **ok).count() as f64 / t.elapsed().as_secs_f64();

    // The floors' records are active runs: the API's reconciler would chase them.
    s.kill_api().await?;
    let request: RunRequest = serde_json::from_value(body)?;
    let floor = floor_rate(&infra, posts, &request, Work::Api).await;
    let minimal = floor_rate(&infra, posts, &request, Work::Minimal).await;
    println!(
        "POST /runs accepted per second, {posts} requests, {CONCURRENCY} in flight (local, release, NATS {topology}):"
    );
    println!("  metis-api:                              {api:>8.0} runs/s");
    println!(
        "  floor (the API's NATS work, direct):    {floor:>8.0} runs/s  (2 index publishes, KV create, run publish)"
    );
    println!(
        "  ratio: {:.2} of the floor (aim: at least 0.5)",
        api / floor
    );
    println!(
        "  for scale, 1 KV create + 1 publish:     {minimal:>8.0} runs/s  (ratio {:.2}; a run without its indexes)",
        api / minimal
    );
    println!("  for scale, HTTP alone (GET /healthz):   {http:>8.0} requests/s");
    Ok(())
}

/// The NATS work of one run in a floor measurement.
#[derive(Clone, Copy, PartialEq)]
enum Work {
    /// What `POST /runs` does: both index entries (concurrently), the KV create, the run
    /// message, each de-duplicated by run id, in the API's order.
    Api,
    /// One KV create and one publish: a run without its indexes.
    Minimal,
}

/// Runs per second of `work` made directly with async-nats, `CONCURRENCY` in flight.
async fn floor_rate(infra: &Infra, posts: usize, request: &RunRequest, work: Work) -> f64 {
    let publish = |subject: String, id: RunId, payload: bytes::Bytes| {
        let js = infra.js.clone();
        async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(nats::MSG_ID, id.to_string().as_str());
            match js.publish_with_headers(subject, headers, payload).await {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            }
        }
    };
    let t = Instant::now();
    let done: Vec<bool> = futures::stream::iter(0..posts)
        .map(|_| async {
            let id = RunId::new();
            let rec = RunRecord::queued(id, "floor".into(), request.clone());
            let Ok(bytes) = serde_json::to_vec(&rec) else {
                return false;
            };
            if work == Work::Api {
                let (user, active) = futures::join!(
                    publish(
                        nats::user_run_subject("floor", &id),
                        id,
                        bytes::Bytes::new()
                    ),
                    publish(nats::active_subject("floor", &id), id, bytes::Bytes::new()),
                );
                if !(user && active) {
                    return false;
                }
            }
            if infra
                .runs
                .create(id.to_string(), bytes.clone().into())
                .await
                .is_err()
            {
                return false;
            }
            let subject = nats::run_message_subject(
                &nats::run_subject("floor", "1", "SH", "1"),
                "floor",
                &id,
            );
            publish(subject, id, bytes.into()).await
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    done.iter().filter(|ok| **ok).count() as f64 / t.elapsed().as_secs_f64()
}

/// Measurement 3: how long the repairs of an engine's and an API's SIGKILL take.
pub async fn crash_bounds(production: bool) -> Result<()> {
    let label = if production {
        "production defaults (heartbeat 2 s, ENGINE_TTL_MS 10000, REAPER_INTERVAL_MS 2000)"
    } else {
        "harness timings (heartbeat 200 ms, ENGINE_TTL_MS 1200, REAPER_INTERVAL_MS 200)"
    };
    let deadline = Duration::from_secs(60);

    let mut s = stack("bench-engine-kill", 1, production).await?;
    let run = s.client.create_run(&body("sleep.sh")).await?;
    s.client
        .wait_for_state(&run, &["RUNNING"], deadline)
        .await?;
    let t = Instant::now();
    s.kill_engine(0).await?;
    s.client
        .wait_for_state(&run, &["SYSTEM_ERROR"], deadline)
        .await?;
    let engine = t.elapsed();
    drop(s);

    const ORPHANS: usize = 20;
    let mut s = stack("bench-api-kill", 1, production).await?;
    s.stop_engine(0).await?;
    let mut runs = Vec::new();
    for _ in 0..ORPHANS {
        runs.push(s.client.create_run(&body("ok.sh")).await?);
    }
    // As if the API had died after storing them and before publishing.
    s.lose_run_messages().await?;
    s.start_engine().await?;
    let t = Instant::now();
    s.kill_api().await?;
    s.restart_api().await?;
    let restarted = t.elapsed();
    for run in &runs {
        s.client
            .wait_for_state(
                run,
                &["INITIALIZING", "RUNNING", "COMPLETE", "EXECUTOR_ERROR"],
                deadline,
            )
            .await?;
    }
    let api = t.elapsed();
    println!("time to finish what a crash left, {label}:");
    println!(
        "  engine SIGKILL → its run SYSTEM_ERROR:                     {:>6.2}s",
        engine.as_secs_f64()
    );
    println!(
        "  API SIGKILL → {ORPHANS} orphaned QUEUED runs dispatched and claimed: {:>6.2}s (API back after {:.2}s)",
        api.as_secs_f64(),
        restarted.as_secs_f64()
    );
    Ok(())
}

/// The median of `v` (sorted in place); 0 when empty.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// What the per-run sandbox costs, side by side with the same engine unsandboxed
/// (`METIS_UNSAFE_NO_SANDBOX=1`), `runs` runs of `ok.sh` each after one warm-up, one at a
/// time: start-to-first-output (the run log's `start_time`, taken as the engine spawns, to the
/// time the engine read the first output line) and create-to-COMPLETE as a client sees it
/// (which also holds the per-run uid, the workdir's `chown` and its removal).
pub async fn sandbox_cost(runs: usize) -> Result<()> {
    let mut rows = Vec::new();
    for unsandboxed in [false, true] {
        let kind = if unsandboxed { "none" } else { "bubblewrap" };
        let s = Stack::start(
            &format!("bench-sandbox-{kind}"),
            StackOptions {
                backend: Some(Backend::Local),
                unsandboxed,
                ..StackOptions::default()
            },
        )
        .await?;
        let (mut first, mut total) = (Vec::new(), Vec::new());
        for i in 0..=runs {
            let t = Instant::now();
            let run = s.client.create_run(&body("ok.sh")).await?;
            s.client
                .wait_for_state(&run, &["COMPLETE"], Duration::from_secs(30))
                .await?;
            let elapsed = t.elapsed().as_secs_f64() * 1000.0;
            let detail = s.client.get(&format!("/runs/{run}")).await?.body;
            let logs = s.client.get(&format!("/runs/{run}/logs")).await?.body;
            let time = |v: &serde_json::Value| {
                v.as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            };
            let start = time(&detail["run_log"]["start_time"]).context("run_log.start_time")?;
            let out = time(&logs["lines"][0]["time"]).context("the first log line's time")?;
            if i > 0 {
                first.push((out - start).num_microseconds().unwrap_or_default() as f64 / 1000.0);
                total.push(elapsed);
            }
        }
        rows.push((kind, median(&mut first), median(&mut total)));
    }
    println!("sandbox cost, ok.sh, {runs} runs each (local backend), medians:");
    println!("  sandbox      start→first output   create→COMPLETE");
    for (kind, first, total) in &rows {
        println!("  {kind:<12} {first:>14.1} ms {total:>14.1} ms");
    }
    if let [(_, a, b), (_, c, d)] = rows.as_slice() {
        println!(
            "  ratio        {:>14.2}×    {:>14.2}×",
            a / c.max(0.001),
            b / d.max(0.001)
        );
    }
    Ok(())
}

/// Publishes `n` messages `payload(i)` on `subject(i)` into JetStream, 256 in flight.
async fn publish_many(
    infra: &Infra,
    n: usize,
    subject: impl Fn(usize) -> String,
    payload: impl Fn(usize) -> Vec<u8>,
) -> Result<()> {
    let results: Vec<Result<()>> = futures::stream::iter(0..n)
        .map(|i| {
            let (js, subject, payload) = (infra.js.clone(), subject(i), payload(i));
            async move {
                js.publish(subject, payload.into()).await?.await?;
                Ok(())
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Measurement 5: the reads the limits issue asks to be O(page), each at 0 and at 100 000
/// lines or runs, side by side (aim: at most 1.5× from 0 to 100k):
/// - one stderr line (`?stream=stderr&page_size=1`) of a run with that many stdout lines;
/// - one failed run (`?state=EXECUTOR_ERROR&page_size=1`) of a user with that many completed;
/// - `GET /service-info` with that many unfinished runs (QUEUED records, indexed, their run
///   messages waiting for an engine that is not running).
///
/// Seeded directly in NATS the way the service stores them.
pub async fn reads_against_volume() -> Result<()> {
    const N: usize = 100_000;
    let s = stack("bench-reads", 0, true).await?;
    let infra = Infra::ensure(s.infra.nats_endpoint.connect().await?)
        .await
        .context("opening the stack's streams")?;
    let user = s.client.as_user(Some("bench-reads"));
    let request: RunRequest = serde_json::from_value(body("ok.sh"))?;
    let line = |stream: common::LogStream, seq: u64, text: String| {
        serde_json::to_vec(&common::LogLine {
            seq,
            stream,
            line: text,
            continues: false,
            time: chrono::Utc::now(),
        })
        .unwrap_or_default()
    };
    // For each volume: a run with `n` stdout lines then one stderr line, and a user with `n`
    // completed runs and one failed one.
    let mut rows = Vec::new();
    for n in [0, N] {
        let t = Instant::now();
        let run = RunId::new();
        let mut rec = RunRecord::queued(run, "bench-reads".to_owned(), request.clone());
        rec.state = State::Complete;
        infra.create_run(&rec).await?;
        publish_many(
            &infra,
            n,
            |_| nats::logs_subject(&run, common::LogStream::Stdout),
            |i| line(common::LogStream::Stdout, i as u64, format!("line {i}")),
        )
        .await?;
        infra
            .js
            .publish(
                nats::logs_subject(&run, common::LogStream::Stderr),
                line(common::LogStream::Stderr, n as u64, "the error".to_owned()).into(),
            )
            .await?
            .await?;
        let owner = format!("bench-state-{n}");
        let ids: Vec<RunId> = (0..n).map(|_| RunId::new()).collect();
        publish_many(
            &infra,
            n,
            |i| nats::user_run_subject(&owner, &ids[i]),
            |_| Vec::new(),
        )
        .await?;
        publish_many(
            &infra,
            n,
            |i| nats::user_finished_subject(&owner, &ids[i], State::Complete),
            |_| Vec::new(),
        )
        .await?;
        let failed = RunId::new();
        let mut rec = RunRecord::queued(failed, owner.clone(), request.clone());
        rec.state = State::ExecutorError;
        infra.create_run(&rec).await?;
        infra
            .finished(&failed, &owner, State::ExecutorError)
            .await?;
        s.timeline.note(format!(
            "seeded {n} log lines and {n} runs in {:.1}s",
            t.elapsed().as_secs_f64()
        ));
        let logs = median_ms(
            &user,
            &format!("/runs/{run}/logs?stream=stderr&page_size=1"),
            20,
        )
        .await?;
        let listing = median_ms(
            &s.client.as_user(Some(&owner)),
            "/runs?state=EXECUTOR_ERROR&page_size=1",
            20,
        )
        .await?;
        rows.push((n, logs, listing));
    }
    // Unfinished runs for `/service-info`: 0, then 100k.
    let info0 = median_ms(&s.client, "/service-info", 20).await?;
    let t = Instant::now();
    let queued: Vec<RunId> = (0..N).map(|_| RunId::new()).collect();
    let prefix = nats::run_subject("floor", "1", "SH", "1");
    let results: Vec<Result<()>> = futures::stream::iter(queued.iter().copied())
        .map(|id| {
            let (infra, request, prefix) = (infra.clone(), request.clone(), prefix.clone());
            async move {
                let mut rec = RunRecord::queued(id, "bench-queued".to_owned(), request);
                let subject = nats::run_message_subject(&prefix, "bench-queued", &id);
                rec.subject = Some(subject.clone());
                infra.create_run(&rec).await?;
                infra
                    .js
                    .publish(subject, bytes::Bytes::new())
                    .await?
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>>>()?;
    s.timeline.note(format!(
        "seeded {N} queued runs in {:.1}s",
        t.elapsed().as_secs_f64()
    ));
    let info_n = median_ms(&s.client, "/service-info", 20).await?;

    println!("O(page) reads (local backend, release build; median of 20 requests, ms):");
    println!(
        "  volume  | one stderr line after N stdout lines | one failed run among N completed | GET /service-info with N unfinished runs"
    );
    let info = [info0, info_n];
    for (k, (n, logs, listing)) in rows.iter().enumerate() {
        println!(
            "  {n:>7} | {logs:>36.2} | {listing:>32.2} | {:>40.2}",
            info[k]
        );
    }
    if let [(_, l0, s0), (_, ln, sn)] = rows.as_slice() {
        println!(
            "  ratio 100k/0: log page {:.2}, state listing {:.2}, service-info {:.2} (aim: at most 1.5)",
            ln / l0,
            sn / s0,
            info_n / info0
        );
    }
    Ok(())
}
