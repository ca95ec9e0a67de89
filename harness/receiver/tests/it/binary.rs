//! The `otlp-receiver` binary: ephemeral ports, exactly one JSON line on stdout with the bound
//! addresses, serves exports and queries, exits 0 on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use opentelemetry::trace::Tracer as _;
use otlp_receiver::{Addresses, Query, ReceiverClient};
use tokio::io::{AsyncBufReadExt as _, BufReader};

use super::{Tracing, Transport, names};

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_prints_its_addresses_serves_and_exits_on_sigterm() {
    let mut child = test_support::clean_command(env!("CARGO_BIN_EXE_otlp-receiver"))
        .args(["--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn otlp-receiver");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let stderr = child.stderr.take().expect("stderr");
    let stderr = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut all = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push(line);
        }
        all
    });

    let line = tokio::time::timeout(DEADLINE, stdout.next_line())
        .await
        .expect("otlp-receiver prints its addresses within 30s")
        .expect("read stdout")
        .expect("a line before EOF");
    let addresses: Addresses = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("{line:?} is not the addresses line: {e}"));
    for addr in [addresses.grpc, addresses.http] {
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{line}");
    }
    assert_eq!(
        line,
        format!(
            r#"{{"grpc":"{}","http":"{}"}}"#,
            addresses.grpc, addresses.http
        )
    );

    let tracing = Tracing::new(addresses, Transport::Grpc, "from-binary");
    drop(tracing.tracer().start("hello"));
    tracing.flush().await;
    tracing.shutdown().await;
    let client = ReceiverClient::for_addr(addresses.http);
    let data = client
        .wait_for(&Query::new().min_spans(1).timeout(DEADLINE))
        .await
        .expect("the span arrives");
    assert_eq!(names(&data), ["from-binary/hello"]);

    let pid = i32::try_from(child.id().expect("running")).expect("pid fits i32");
    kill(Pid::from_raw(pid), Signal::SIGTERM).expect("send SIGTERM");
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("otlp-receiver exits within 30s of SIGTERM")
        .expect("wait for otlp-receiver");
    let stderr = stderr.await.expect("join the stderr reader");
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        stderr.join("\n")
    );
    assert_eq!(
        stdout.next_line().await.expect("read stdout"),
        None,
        "nothing but the addresses line on stdout"
    );
}
