//! Fault modes: the receiver misbehaving on purpose, so exporter retries can be tested without
//! killing it.
//!
//! Set over the HTTP port: `PUT /v1/faults` with a [`FaultMode`] as JSON, `GET /v1/faults`
//! for the mode and what it has done so far, `DELETE /v1/faults` to behave again. While a
//! mode has refusals left, each export (traces, logs or metrics, on either transport) uses
//! one and is answered with an error instead of being kept:
//!
//! | `refuse_with` | gRPC | HTTP |
//! | --- | --- | --- |
//! | `unavailable` (default) | `UNAVAILABLE` | `503 Service Unavailable` |
//! | `throttled` | `RESOURCE_EXHAUSTED` with a `RetryInfo` of `retry_after_s` | `429 Too Many Requests` with `Retry-After: <retry_after_s>` |
//!
//! The OTLP specification lists both as retryable. `delay_ms` delays every export (refused or
//! not) by that long before it is answered.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How exports are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// gRPC `UNAVAILABLE`, HTTP 503.
    #[default]
    Unavailable,
    /// gRPC `RESOURCE_EXHAUSTED` with `RetryInfo`, HTTP 429 with `Retry-After`.
    Throttled,
}

/// What `PUT /v1/faults` sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultMode {
    /// How many of the next exports to refuse.
    pub refuse: u64,
    /// How to refuse them.
    pub refuse_with: Refusal,
    /// The retry delay a throttled refusal asks for, in seconds.
    pub retry_after_s: u64,
    /// Delay before answering every export, in milliseconds.
    pub delay_ms: u64,
}

/// What `GET /v1/faults` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FaultStatus {
    /// The mode, with `refuse` counting down as refusals are used.
    pub mode: FaultMode,
    /// Exports refused since the mode was set.
    pub refused: u64,
}

/// The receiver's current fault mode.
#[derive(Debug, Default)]
pub(crate) struct Faults(Mutex<FaultStatus>);

impl Faults {
    pub(crate) fn set(&self, mode: FaultMode) {
        *self.lock() = FaultStatus { mode, refused: 0 };
    }

    pub(crate) fn status(&self) -> FaultStatus {
        *self.lock()
    }

    /// For one export: the delay to apply, and the refusal to answer with, if any.
    pub(crate) fn take(&self) -> (Duration, Option<(Refusal, u64)>) {
        let mut status = self.lock();
        let delay = Duration::from_millis(status.mode.delay_ms);
        if status.mode.refuse == 0 {
            return (delay, None);
        }
        status.mode.refuse -= 1;
        status.refused += 1;
        (
            delay,
            Some((status.mode.refuse_with, status.mode.retry_after_s)),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultStatus> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_count_down_and_are_counted() {
        let f = Faults::default();
        assert_eq!(f.take(), (Duration::ZERO, None));
        f.set(FaultMode {
            refuse: 2,
            refuse_with: Refusal::Throttled,
            retry_after_s: 1,
            delay_ms: 5,
        });
        let d = Duration::from_millis(5);
        assert_eq!(f.take(), (d, Some((Refusal::Throttled, 1))));
        assert_eq!(f.take(), (d, Some((Refusal::Throttled, 1))));
        assert_eq!(f.take(), (d, None));
        assert_eq!(f.status().refused, 2);
        assert_eq!(f.status().mode.refuse, 0);
    }
}
