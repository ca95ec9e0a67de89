//! No client can hold the API: a client that sends half a request head is cut off after
//! `HTTP_HEADER_TIMEOUT_MS`, one that sends half a body gets a 408 that names
//! `HTTP_BODY_TIMEOUT_MS` — the way a stalled or hostile client would try it, over a raw
//! connection, against the real binary.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::Stack;

/// Reads until the server closes the connection or `limit` passes; returns what arrived and
/// whether it was closed.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0_u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

#[tokio::test]
async fn half_a_head_is_cut_off_and_half_a_body_is_a_408() -> anyhow::Result<()> {
    let stack = Stack::start_with(
        "deadlines",
        &[
            ("HTTP_HEADER_TIMEOUT_MS", "300".to_owned()),
            ("HTTP_BODY_TIMEOUT_MS", "300".to_owned()),
        ],
    )
    .await?;
    let addr = stack.client.base.trim_start_matches("http://").to_owned();

    // Half a request head, then nothing: the API closes the connection.
    let mut stalled = tokio::net::TcpStream::connect(&addr).await?;
    stalled
        .write_all(b"POST /runs HTTP/1.1\r\nhost: metis\r\ncontent-type: application/json\r\n")
        .await?;
    let started = Instant::now();
    let (reply, closed) = read_until_closed(&mut stalled, Duration::from_secs(10)).await;
    assert!(
        closed,
        "a client that never finishes its head still holds a connection after {:?} (got {reply:?})",
        started.elapsed()
    );
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
        "cut off, or told it timed out: {reply:?}"
    );

    // A whole head that announces 100 bytes of body, then 10: a 408 naming the setting.
    let mut slow = tokio::net::TcpStream::connect(&addr).await?;
    slow.write_all(
        format!(
            "POST /runs HTTP/1.1\r\nhost: metis\r\ncontent-type: application/json\r\n\
             authorization: Bearer {}\r\ncontent-length: 100\r\n\r\n{{\"workflow",
            test_support::metis::mint_token("alice")
        )
        .as_bytes(),
    )
    .await?;
    let (reply, _) = read_until_closed(&mut slow, Duration::from_secs(10)).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply:?}");
    assert!(reply.contains("HTTP_BODY_TIMEOUT_MS"), "{reply:?}");

    // Nothing was stored, and the API still answers everyone else.
    assert_eq!(stack.infra().await?.user_runs("alice").await?, Vec::new());
    assert_eq!(stack.client.get("/readyz").await?.status, 200);
    Ok(())
}
