//! Span trees (work in progress).
