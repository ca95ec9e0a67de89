//! Deadlines: no client can hold a service. A client that sends half a request head, or a
//! head and half a body, and then stalls, does not keep `metis-api` (nor an engine's health
//! port) from exiting on SIGTERM: in-flight requests get `SHUTDOWN_GRACE_MS`, the engine's
//! health connections a moment, and then the process exits 0 anyway.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::stack;

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
                let _half_body = stall(
                    &api,
                    b"POST /runs HTTP/1.1\r\nHost: metis\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"workflow",
                )
                .await?;
                let _health = stall(&health, b"GET /healthz HTTP/1.1\r\nHost: m").await?;
                // The service still answers everyone else meanwhile.
                assert_eq!(s.client.get("/healthz").await?.status, 200);

                // SIGTERM: each exits 0 while the stalled clients stay connected. Without the
                // deadlines the API waited for the half-sent requests for ever (the body
                // deadline, 30 s, is past this bound; the grace, 10 s, is not).
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
