//! Every port is ephemeral and every scenario has its own stack and artefact folder: two
//! stacks started at once (as nextest runs scenarios) share no port and no folder, and none
//! listens on a well-known default that a developer's own NATS, API or collector would hold.

use harness::backend::Backend;
use harness::{Stack, StackOptions};

/// The port of every address in `text` (`nats://127.0.0.1:4222,…`, `http://127.0.0.1:8080`).
fn ports(text: &str) -> Vec<u16> {
    text.split(',')
        .filter_map(|a| a.rsplit(':').next()?.trim_end_matches('/').parse().ok())
        .collect()
}

fn stack_ports(s: &Stack) -> Vec<u16> {
    let mut all = ports(&s.client.base);
    all.extend(ports(&s.infra.nats_endpoint.url));
    all.extend(ports(&s.infra.receiver.grpc));
    all.extend(ports(&s.infra.receiver.http));
    all.extend(s.engines.iter().flat_map(|e| ports(&e.url)));
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stacks_at_once_share_no_port_and_no_folder() -> anyhow::Result<()> {
    let options = || StackOptions {
        engines: 1,
        backend: Some(Backend::Local),
        ..StackOptions::default()
    };
    let (a, b) = tokio::join!(
        Stack::start("ports_a", options()),
        Stack::start("ports_b", options())
    );
    let (a, b) = (a?, b?);
    let (pa, pb) = (stack_ports(&a), stack_ports(&b));
    assert_eq!(
        pa.len(),
        5,
        "API, NATS, receiver (gRPC, HTTP), engine: {pa:?}"
    );
    for p in pa.iter().chain(&pb) {
        assert!(
            ![4222, 6222, 8222, 8080, 8081, 4317, 4318].contains(p),
            "a well-known default port {p} in {pa:?} / {pb:?}"
        );
    }
    let mut all: Vec<u16> = pa.iter().chain(&pb).copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), pa.len() + pb.len(), "shared: {pa:?} / {pb:?}");
    assert_ne!(a.dir, b.dir, "each stack has its own artefact folder");
    Ok(())
}
