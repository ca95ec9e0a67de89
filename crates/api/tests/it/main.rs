//! Black-box tests of `metis-api` over HTTP and NATS, against a real `nats-server -js` and,
//! where a run must execute, the real `metis-engine-generic` binary.

mod auth;
mod bad_input;
mod confinement;
mod deadlines;
mod indexes;
mod lifecycle;
mod queue;
mod support;
