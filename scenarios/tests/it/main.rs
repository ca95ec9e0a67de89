//! End-to-end scenarios (work in progress).
