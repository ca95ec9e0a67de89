//! Deadlines: no client can hold a service. A client that sends half a request head, or a
//! head and half a body, and then stalls, does not keep `metis-api` (nor an engine's health
//! port) from exiting on SIGTERM: in-flight requests get `SHUTDOWN_GRACE_MS`, the engine's
//! health connections a moment, and then the process exits 0 anyway.
//!
//! Quotas: past `MAX_UNFINISHED_RUNS_PER_USER`, a user's create is a 429 naming the limit and
//! the usage; other users are not held back.
//!
//! Fairness: one user's backlog does not delay another user's run by more than one run's
//! slot (`fairness`, and `cluster_fairness` on a three-server cluster).

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use harness::tree::expect;
use serde_json::json;

use crate::support::{
    DEADLINE, check_census, check_tree, check_tree_of, engine_ids, forest_of, run_body,
    snapshot_body, stack,
};

/// Opens a connection to `url` (`http://host:port`) and sends `bytes`, then keeps it open.
async fn stall(url: &str, bytes: &[u8]) -> anyhow::Result<TcpStream> {
    let addr = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(bytes).await?;
    stream.flush().await?;
    Ok(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_do_not_hold_shutdown() -> anyhow::Result<()> {
    stack("stalled_clients", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                let api = s.client.base.clone();
                let health = s.engines[0].url.clone();
                let _half_head = stall(&api, b"POST /runs HTTP/1.1\r\nHost: metis\r\n").await?;
                // Authenticated, so the handler is reading the body when SIGTERM comes (a
                // request without a token is answered 401 before its body is read).
                let authorization = s.client.authorization().unwrap_or_default().to_owned();
                let _half_body = stall(
                    &api,
                    format!(
                        "POST /runs HTTP/1.1\r\nHost: metis\r\nAuthorization: {authorization}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"workflow"
                    )
                    .as_bytes(),
                )
                .await?;
                let _health = stall(&health, b"GET /healthz HTTP/1.1\r\nHost: m").await?;
                // The service still answers everyone else meanwhile.
                assert_eq!(s.client.get("/healthz").await?.status, 200);

                // SIGTERM: each exits 0 while the stalled clients stay connected. Without the
                // deadlines the API waited for the half-sent requests for ever. The half-sent
                // body is still being read when the grace (10 s) ends (its deadline is 30 s),
                // so the API must cut it short, and says so.
                for (what, proc) in [
                    ("metis-api", &mut s.api.as_mut().expect("api").proc),
                    ("the engine", &mut s.engines[0].proc),
                ] {
                    let status = proc.terminate(Duration::from_secs(20)).await?;
                    assert!(status.success(), "{what} exited with {status}");
                }
                let api_log = s.api.as_ref().expect("api").proc.lines().join("\n");
                assert!(
                    api_log.contains("connections still open after SHUTDOWN_GRACE_MS"),
                    "the API says it cut the stalled connections short"
                );
                Ok(())
            })
        })
        .await
}

/// **What it pins.** With `MAX_UNFINISHED_RUNS_PER_USER=2`, alice's third run is a 429 naming the
/// limit and her usage (`quota`, `Retry-After`) and is not stored; bob's run goes through; once
/// hers finish she may create again.
///
/// **Why it matters.** One user cannot fill the service: past `MAX_UNFINISHED_RUNS_PER_USER`
/// runs not yet terminal, a create is a 429 that names the limit and the usage (with
/// `Retry-After`) and stores nothing, while another user's runs go through; once runs finish,
/// the user may create again.
///
/// **If this changes.** A `workflow_run` for the refused request means the quota let it through;
/// a 429 for bob means one user's quota counts another's runs.
// ANCHOR: quota_unfinished_runs
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_unfinished_runs() -> anyhow::Result<()> {
    harness::Stack::start(
        "quota_unfinished_runs",
        harness::StackOptions {
            api_env: vec![("MAX_UNFINISHED_RUNS_PER_USER", "2".to_owned())],
            ..harness::StackOptions::default()
        },
    )
    .await?
    .run(|s| {
        Box::pin(async move {
            let gate = s.gate();
            let mut gated = run_body("gated.sh");
            gated["workflow_params"] = json!({"gate": gate.display().to_string()});
            let first = s.client.create_run(&gated).await?;
            let second = s.client.create_run(&gated).await?;
            let r = s.client.post("/runs", &gated).await?;
            assert_eq!(r.status, 429, "{}", r.body);
            assert_eq!(
                r.body["quota"],
                json!({"limit_name": "MAX_UNFINISHED_RUNS_PER_USER", "limit": 2, "usage": 2}),
                "{}",
                r.body
            );
            assert_eq!(
                r.headers.get("retry-after").and_then(|v| v.to_str().ok()),
                Some("10"),
                "a Retry-After header"
            );
            assert_eq!(
                s.client.get("/runs").await?.body["runs"]
                    .as_array()
                    .map(Vec::len),
                Some(2),
                "the refused run was not stored"
            );
            // Another user is not held back by alice's quota.
            let bob = s.client.as_user(Some("bob"));
            let theirs = bob.create_run(&run_body("ok.sh")).await?;
            bob.wait_for_state(&theirs, &["COMPLETE"], DEADLINE).await?;
            // Once alice's runs finish, she may create again.
            std::fs::write(&gate, "open")?;
            for run in [&first, &second] {
                s.client
                    .wait_for_state(run, &["COMPLETE"], DEADLINE)
                    .await?;
            }
            let again = s.client.create_run(&run_body("ok.sh")).await?;
            s.client
                .wait_for_state(&again, &["COMPLETE"], DEADLINE)
                .await?;
            let info = s.client.get("/service-info").await?.body;
            assert_eq!(info["limits"]["MAX_UNFINISHED_RUNS_PER_USER"], 2, "{info}");

            let engines = engine_ids(s).await?;
            let forest = check_tree(s, "quota_unfinished_runs", 5, &engines).await?;
            expect::span()
                .named("POST /runs")
                .with_attr("http.response.status_code", 429)
                .once()
                .check(&forest)?;
            expect::span()
                .named("workflow_run")
                .times(4)
                .check(&forest)?;
            Ok(())
        })
    })
    .await
}
// ANCHOR_END: quota_unfinished_runs

/// Alice fills the engine's one slot and queues two more runs behind it; then bob queues one.
/// When the slot frees, it is bob's turn, not the next of alice's. Returns the run ids in the
/// order their processes started.
async fn fairness_order(s: &mut harness::Stack) -> anyhow::Result<Vec<String>> {
    let gate = s.gate();
    let mut gated = run_body("gated.sh");
    gated["workflow_params"] = json!({"gate": gate.display().to_string()});
    let mut alice = Vec::new();
    for _ in 0..3 {
        alice.push(s.client.create_run(&gated).await?);
    }
    s.client
        .wait_for_state(&alice[0], &["RUNNING"], DEADLINE)
        .await?;
    let bob = s.client.as_user(Some("bob"));
    let theirs = bob.create_run(&run_body("ok.sh")).await?;
    assert_eq!(
        bob.state(&theirs).await?,
        "QUEUED",
        "the one slot is alice's"
    );
    std::fs::write(&gate, "open")?;
    let mut started = Vec::new();
    for (client, run) in alice
        .iter()
        .map(|r| (&s.client, r))
        .chain([(&bob, &theirs)])
    {
        client.wait_for_state(run, &["COMPLETE"], DEADLINE).await?;
        let r = client.get(&format!("/runs/{run}")).await?;
        let at = r.body["run_log"]["start_time"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .ok_or_else(|| anyhow::anyhow!("run {run} has no start time: {}", r.body))?;
        started.push((at, run.clone()));
    }
    started.sort();
    let order: Vec<String> = started.into_iter().map(|(_, run)| run).collect();
    // FIFO would start alice's second run next; the round-robin starts bob's.
    let expected = [
        alice[0].clone(),
        theirs.clone(),
        alice[1].clone(),
        alice[2].clone(),
    ];
    let name = |run: &String| {
        if *run == theirs {
            "bob".to_owned()
        } else {
            format!(
                "alice#{}",
                alice.iter().position(|a| a == run).unwrap_or(9) + 1
            )
        }
    };
    assert_eq!(
        order.iter().map(name).collect::<Vec<_>>(),
        expected.iter().map(name).collect::<Vec<_>>(),
        "the order the runs started in"
    );
    Ok(order)
}

/// **What it pins.** One run slot: alice's gated run holds it with two more of hers queued behind,
/// bob queues one; when the slot frees, bob's run starts before alice's second (the order asserted
/// from the runs' start times).
///
/// **Why it matters.** One user's backlog cannot starve another user: each user's runs queue on
/// a subject of their own, and an engine with a free slot serves the users round-robin, so
/// bob's one run waits for one slot of alice's, not for her whole backlog.
///
/// **If this changes.** `alice#2` before `bob` means dispatch is first come, first served
/// again (one consumer for everyone); a missing `workflow_run` or a count other than alice ×3 and
/// bob ×1 in the census means a per-user queue was not claimed at all.
// ANCHOR: fairness
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fairness() -> anyhow::Result<()> {
    harness::Stack::start(
        "fairness",
        harness::StackOptions {
            max_concurrent_runs: Some(1),
            ..harness::StackOptions::default()
        },
    )
    .await?
    .run(|s| {
        Box::pin(async move {
            let runs = fairness_order(s).await?;
            let engines = engine_ids(s).await?;
            // Alice's three runs share a shape, bob's differs only by his name.
            let data = check_census(s, "fairness", &runs, &engines).await?;
            let forest = forest_of(&data)?;
            expect::span()
                .named("workflow_run")
                .times(4)
                .check(&forest)?;
            Ok(())
        })
    })
    .await
}
// ANCHOR_END: fairness

/// **What it pins.** The same on a three-server cluster; the tree equals `fairness`'s.
///
/// **Why it matters.** Production runs a three-server cluster: the per-user consumers are
/// replicated like the rest, and the round-robin holds there too.
///
/// **If this changes.** The order is the single server's; the tree must equal `fairness`'s,
/// so a difference means a code path depends on the NATS topology.
// ANCHOR: cluster_fairness
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_fairness() -> anyhow::Result<()> {
    harness::Stack::start(
        "cluster_fairness",
        harness::StackOptions {
            max_concurrent_runs: Some(1),
            nats: Some(harness::topology::Topology::Cluster),
            ..harness::StackOptions::default()
        },
    )
    .await?
    .run(|s| {
        Box::pin(async move {
            assert_eq!(s.infra.nats_servers(), ["n1", "n2", "n3"]);
            let runs = fairness_order(s).await?;
            let engines = engine_ids(s).await?;
            check_census(s, "cluster_fairness", &runs, &engines).await?;
            assert_eq!(
                std::fs::read_to_string(s.dir.join("tree.txt"))?.trim_end(),
                snapshot_body("fairness")?,
                "the cluster's tree differs from the single server's fairness"
            );
            Ok(())
        })
    })
    .await
}
// ANCHOR_END: cluster_fairness

/// **What it pins.** With `MAX_STORED_RUNS_PER_USER=2` alice's third run is a 429 naming the limit
/// (no `Retry-After`); with `MAX_LOG_BYTES_PER_USER=300` bob's run printing ~400 bytes stores
/// exactly 300, then a `[metis] output truncated` line, his log response carries a `notice`, his
/// next run is a 429; `/service-info` shows his usage; carol is untouched.
///
/// **Why it matters.** What a user stores is bounded too: past `MAX_STORED_RUNS_PER_USER` runs
/// or `MAX_LOG_BYTES_PER_USER` bytes of output, a create is a 429 naming the limit and the
/// usage, and a run stores at most what is left of its user's output quota, then says where it
/// stopped, in its log and in the log response's `notice`. Nobody else's lines are evicted.
///
/// **If this changes.** A third `workflow_run` for alice means the stored-runs quota let it
/// through; bob's log without the `[metis] output truncated` line means his output was not
/// capped by his quota; a 429 for carol means one user's usage counted another's.
// ANCHOR: quota_stored_runs_and_log_bytes
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_stored_runs_and_log_bytes() -> anyhow::Result<()> {
    harness::Stack::start(
        "quota_stored_runs_and_log_bytes",
        harness::StackOptions {
            api_env: vec![
                ("MAX_STORED_RUNS_PER_USER", "2".to_owned()),
                ("MAX_LOG_BYTES_PER_USER", "300".to_owned()),
            ],
            ..harness::StackOptions::default()
        },
    )
    .await?
    .run(|s| {
        Box::pin(async move {
            // Alice: two runs stored (finished or not), the third is refused.
            for _ in 0..2 {
                let run = s.client.create_run(&run_body("ok.sh")).await?;
                s.client
                    .wait_for_state(&run, &["COMPLETE"], DEADLINE)
                    .await?;
            }
            let r = s.client.post("/runs", &run_body("ok.sh")).await?;
            assert_eq!(r.status, 429, "{}", r.body);
            assert_eq!(
                r.body["quota"]["limit_name"], "MAX_STORED_RUNS_PER_USER",
                "{}",
                r.body
            );
            assert_eq!((&r.body["quota"]["limit"], &r.body["quota"]["usage"]), (&json!(2), &json!(2)));
            assert!(
                r.headers.get("retry-after").is_none(),
                "waiting does not free a stored run: no Retry-After"
            );

            // Bob: one run printing about 400 bytes stores 300 at most, and says so.
            let bob = s.client.as_user(Some("bob"));
            let mut loud = run_body("args.sh");
            loud["workflow_params"] = json!({
                "a": "x".repeat(100), "b": "y".repeat(100), "c": "z".repeat(100), "d": "w".repeat(100)
            });
            let run = bob.create_run(&loud).await?;
            bob.wait_for_state(&run, &["COMPLETE"], DEADLINE).await?;
            let logs = bob.get(&format!("/runs/{run}/logs")).await?.body;
            let lines: Vec<&str> = logs["lines"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l["line"].as_str())
                .collect();
            // The cap is filled exactly: the line that passes it is stored as far as it fits.
            let stored: usize = lines[..lines.len() - 1].iter().map(|l| l.len()).sum();
            assert_eq!(stored, 300, "{lines:?}");
            let last = lines.last().copied().unwrap_or_default();
            assert!(
                last.starts_with("[metis] output truncated") && last.contains("MAX_LOG_BYTES_PER_USER"),
                "{last}"
            );
            assert!(
                logs["notice"].as_str().is_some_and(|n| n.contains("MAX_LOG_BYTES_PER_USER")),
                "the log response says why output is missing: {logs}"
            );
            let r = bob.post("/runs", &run_body("ok.sh")).await?;
            assert_eq!(r.status, 429, "{}", r.body);
            assert_eq!(r.body["quota"]["limit_name"], "MAX_LOG_BYTES_PER_USER", "{}", r.body);
            let info = bob.get("/service-info").await?.body;
            assert_eq!(info["limits"]["MAX_LOG_BYTES_PER_USER"], 300, "{info}");
            assert_eq!(info["usage"]["MAX_STORED_RUNS_PER_USER"], 1, "{info}");
            assert_eq!(info["usage"]["MAX_LOG_BYTES_PER_USER"], json!(stored), "{info}");

            // Carol is held back by nobody's usage but her own.
            let carol = s.client.as_user(Some("carol"));
            let theirs = carol.create_run(&run_body("ok.sh")).await?;
            carol.wait_for_state(&theirs, &["COMPLETE"], DEADLINE).await?;

            let engines = engine_ids(s).await?;
            let forest = check_tree(s, "quota_stored_runs_and_log_bytes", 6, &engines).await?;
            expect::span()
                .named("POST /runs")
                .with_attr("http.response.status_code", 429)
                .times(2)
                .check(&forest)?;
            expect::span()
                .named("workflow_run")
                .times(4)
                .check(&forest)?;
            Ok(())
        })
    })
    .await
}
// ANCHOR_END: quota_stored_runs_and_log_bytes

/// **What it pins.** With `RETENTION_MAX_AGE_S=3` alice's finished run leaves, record and lines
/// together (both 404), and her usage goes back to 0; bob's older run, still running, stays and
/// completes.
///
/// **Why it matters.** Records and output lines share one retention policy: a finished run
/// older than `RETENTION_MAX_AGE_S` leaves with its lines, and gives its user's usage back; a
/// run not yet finished stays, whatever its age.
///
/// **If this changes.** Alice's run still readable after the deadline means the sweep does not
/// run; bob's run gone while gated means retention deleted an unfinished run.
// ANCHOR: retention_keeps_records_and_logs_together
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_records_and_logs_together() -> anyhow::Result<()> {
    harness::Stack::start(
        "retention_keeps_records_and_logs_together",
        harness::StackOptions {
            api_env: vec![("RETENTION_MAX_AGE_S", "3".to_owned())],
            ..harness::StackOptions::default()
        },
    )
    .await?
    .run(|s| {
        Box::pin(async move {
            let bob = s.client.as_user(Some("bob"));
            let gate = s.gate();
            let mut gated = run_body("gated.sh");
            gated["workflow_params"] = json!({"gate": gate.display().to_string()});
            let waiting = bob.create_run(&gated).await?;
            bob.wait_for_state(&waiting, &["RUNNING"], DEADLINE).await?;
            let run = s.client.create_run(&run_body("ok.sh")).await?;
            s.client
                .wait_for_state(&run, &["COMPLETE"], DEADLINE)
                .await?;
            assert!(!s.client.log_lines(&run).await?.is_empty());
            // Past the age, the finished run goes: record, lines and usage together.
            test_support::wait_for(
                "alice's finished run to be deleted by retention",
                DEADLINE,
                || async {
                    let detail = s
                        .client
                        .get(&format!("/runs/{run}"))
                        .await
                        .map_err(|e| e.to_string())?;
                    let logs = s
                        .client
                        .get(&format!("/runs/{run}/logs"))
                        .await
                        .map_err(|e| e.to_string())?;
                    if detail.status == 404 && logs.status == 404 {
                        Ok(())
                    } else {
                        Err(format!(
                            "GET /runs/{run}: {}, logs: {}",
                            detail.status, logs.status
                        ))
                    }
                },
            )
            .await?;
            let info = s.client.get("/service-info").await?.body;
            assert_eq!(info["usage"]["MAX_STORED_RUNS_PER_USER"], 0, "{info}");
            assert_eq!(info["usage"]["MAX_LOG_BYTES_PER_USER"], 0, "{info}");
            assert_eq!(s.client.get("/runs").await?.body["runs"], json!([]));
            // Bob's run is older still, but not finished: it stays, and finishes.
            assert_eq!(bob.state(&waiting).await?, "RUNNING");
            std::fs::write(&gate, "open")?;
            // Once finished it is past the age too: COMPLETE, then gone.
            test_support::wait_for("bob's run to finish", DEADLINE, || async {
                let r = bob
                    .get(&format!("/runs/{waiting}/status"))
                    .await
                    .map_err(|e| e.to_string())?;
                match (r.status, r.body["state"].as_str()) {
                    (200, Some("COMPLETE")) | (404, _) => Ok(()),
                    (status, state) => Err(format!("{status} {state:?}")),
                }
            })
            .await?;

            let engines = engine_ids(s).await?;
            let forest = check_tree_of(
                s,
                "retention_keeps_records_and_logs_together",
                2,
                &engines,
                Some(&[run.as_str(), waiting.as_str()]),
            )
            .await?;
            expect::span()
                .named("workflow_run")
                .times(2)
                .check(&forest)?;
            Ok(())
        })
    })
    .await
}
// ANCHOR_END: retention_keeps_records_and_logs_together
