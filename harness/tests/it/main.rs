//! Integration tests of the harness, one module per feature.

mod architecture;
mod ports;
mod teardown;
mod workflows;
