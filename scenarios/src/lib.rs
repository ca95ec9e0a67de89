//! Scenarios live in `tests/it/`; this crate has no library code.
