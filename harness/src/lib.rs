//! End-to-end harness for Metis.
//!
//! - [`backend`]: choosing docker or local (`E2E_BACKEND`).
//! - [`bench`], [`bench_runs`]: the `just bench` measurements.
//! - [`chaos`]: seeded schedules of workload steps and faults, checked by invariants, replayable and shrinkable.
//! - [`client_trace`]: a client's own span, so a scenario's trace can start in the client.
//! - [`fault_trace`]: the harness's own actions as spans, so a snapshot shows where a fault struck.
//! - [`fault`]: faults (kill, pause, restart of engines, the API and NATS) and the load driver.
//! - [`images`]: the container images, built locally, and sweeping leftovers.
//! - [`infra`]: NATS and the fake OTLP receiver on either backend.
//! - [`stack`]: a scenario's whole system, its artefacts and failure reporting.
//! - [`progress`]: progress output and the harness timeline.
//! - [`shards`]: the scenario suite archived once, run in shards, merged into one review.
//! - [`settings`]: the harness's environment variables (`E2E_*` and a few more), as tables the book renders.
//! - [`otlp`]: the fake OTLP receiver (crate `otlp-receiver`, also a binary) and its query client.
//! - [`topology`]: one NATS server or a 3-node JetStream cluster (`E2E_NATS`).
//! - [`tree`]: OTLP spans → normalised, rendered span trees for snapshot tests.

pub mod backend;
pub mod bench;
pub mod bench_runs;
pub mod chaos;
pub mod client_trace;
pub mod fault;
pub mod fault_trace;
pub mod images;
pub mod infra;
pub mod progress;
pub mod settings;
pub mod shards;
pub mod stack;
pub mod topology;

pub use otlp_receiver as otlp;
/// Span trees (the `spantree` crate, which also ships the `spantree` CLI).
pub use spantree as tree;

/// The Metis suite's span-tree policy: spantree's options plus what only Metis knows — a
/// `run_id` (or `*_run_id`) attribute names a run, so its UUID reads `[run#N]` everywhere.
/// spantree itself knows nothing of runs; every tree the suite draws starts from this.
#[must_use]
pub fn tree_options() -> spantree::Options {
    spantree::Options::new().id_family("run_id", "run")
}
pub use stack::{Stack, StackOptions};
pub use test_support::metis::ApiClient;
