//! Integration tests of the harness, one module per feature.

mod teardown;
mod workflows;
