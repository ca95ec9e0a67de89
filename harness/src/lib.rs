//! End-to-end harness for Metis.
//!
//! - [`otlp`]: the fake OTLP receiver (also the `otlp-receiver` binary) that keeps every span
//!   and serves it back over HTTP.
//! - [`tree`]: OTLP spans → normalised, rendered span trees for snapshot tests.

pub mod otlp;
pub mod tree;
