//! Black-box tests of `metis-engine-generic`: a real `nats-server -js` on an ephemeral port,
//! the real binary (built by `test_support::bin`), engine.yaml files derived from
//! `fixtures/engines/generic.yaml`, and the NATS side of the API done exactly as `metis-api`
//! does it. Every wait has a deadline; nothing sleeps.
//!
//! One module per feature; `support` is the test bed.

mod cancel;
mod config;
mod health;
mod injection;
mod lifecycle;
mod malformed;
mod sharing;
mod shutdown;
mod support;
