//! The fake OTLP receiver (work in progress).
