//! Deadlines: no client can hold a service. A client that sends half a request head, or a
//! head and half a body, and then stalls, does not keep `metis-api` (nor an engine's health
//! port) from exiting on SIGTERM: in-flight requests get `SHUTDOWN_GRACE_MS`, the engine's
//! health connections a moment, and then the process exits 0 anyway.
//!
//! Quotas: past `MAX_UNFINISHED_RUNS_PER_USER`, a user's create is a 429 naming the limit and
//! the usage; other users are not held back.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use harness::tree::expect;
use serde_json::json;

use crate::support::{DEADLINE, check_tree, engine_ids, run_body, stack};

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
