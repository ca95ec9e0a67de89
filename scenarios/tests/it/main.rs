//! End-to-end scenarios of Metis: one test binary, one module per feature.
//!
//! Each scenario brings up its own stack (NATS, the fake OTLP receiver, `metis-api`, engines)
//! on the backend `E2E_BACKEND` selects, drives it over HTTP as a user would, checks the
//! HTTP-visible outcome, then collects every exported span and compares the normalised span
//! tree with its named snapshot in `scenarios/snapshots/`.

mod cancel;
mod chaos;
mod cluster;
mod collector;
mod create;
mod engines;
mod faults;
mod invalid;
mod isolation;
mod limits;
mod quickstart;
mod run;
mod security;
mod sharding;
mod smoke;
mod support;
mod transcript;
mod troubleshooting;
