//! How a run ends: the exit status of its process and any stop request → the final state.
//!
//! | what happened | state | `error` |
//! | --- | --- | --- |
//! | a cancel was carried out (the process was signalled, or had not started yet) | `CANCELED` | — |
//! | the engine shut down first | `SYSTEM_ERROR` | `engine shut down before the run finished` |
//! | the engine aborted the run (lost its record, NATS failed) | `SYSTEM_ERROR` | the reason |
//! | exit status 0 | `COMPLETE` | — |
//! | exit status n ≠ 0 | `EXECUTOR_ERROR` | `process exited with status n` |
//! | killed by a signal nobody asked for | `EXECUTOR_ERROR` | `process was killed by signal 9 (SIGKILL)` |
//!
//! The outcome is what happened: a process that exited before a cancel reached it keeps its
//! exit status (exit 0 is `COMPLETE` even when the record already says `CANCELING`).

use common::State;

/// The error text of a run stopped by engine shutdown.
pub const SHUTDOWN_ERROR: &str = "engine shut down before the run finished";

/// Why the engine stopped (or must not start) a run's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The user cancelled the run.
    Cancel,
    /// The engine is shutting down and the grace period is over.
    Shutdown,
    /// The engine cannot carry on with the run (the reason is the run's `error`).
    Abort(String),
}

/// How the workflow process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Exit {
    /// The exit status, when it exited.
    pub code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
}

impl From<std::process::ExitStatus> for Exit {
    fn from(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        Self {
            code: status.code(),
            signal: status.signal(),
        }
    }
}

/// The final state and error of a run; `exit` is `None` when no process ran.
#[must_use]
pub fn outcome(exit: Option<Exit>, stop: Option<&StopReason>) -> (State, Option<String>) {
    match (stop, exit) {
        (Some(StopReason::Cancel), _) => (State::Canceled, None),
        (Some(StopReason::Shutdown), _) => (State::SystemError, Some(SHUTDOWN_ERROR.to_owned())),
        (Some(StopReason::Abort(why)), _) => (State::SystemError, Some(why.clone())),
        (None, Some(Exit { code: Some(0), .. })) => (State::Complete, None),
        (
            None,
            Some(Exit {
                code: Some(code), ..
            }),
        ) => (
            State::ExecutorError,
            Some(format!("process exited with status {code}")),
        ),
        (
            None,
            Some(Exit {
                signal: Some(sig), ..
            }),
        ) => (
            State::ExecutorError,
            Some(format!(
                "process was killed by signal {sig} ({})",
                signal_name(sig)
            )),
        ),
        (
            None,
            Some(Exit {
                code: None,
                signal: None,
            }),
        ) => (
            State::ExecutorError,
            Some("process ended without an exit status".to_owned()),
        ),
        (None, None) => (
            State::SystemError,
            Some("the workflow process never ran".to_owned()),
        ),
    }
}

/// `SIGTERM` for 15, or the number as text.
#[must_use]
pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map_or_else(|_| sig.to_string(), |s| s.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(exit: Option<Exit>, stop: Option<StopReason>, state: State, error: Option<&str>) {
        let got = outcome(exit, stop.as_ref());
        assert_eq!(
            got,
            (state, error.map(str::to_owned)),
            "exit {exit:?}, stop {stop:?}"
        );
    }

    const fn code(c: i32) -> Option<Exit> {
        Some(Exit {
            code: Some(c),
            signal: None,
        })
    }
    const fn signal(s: i32) -> Option<Exit> {
        Some(Exit {
            code: None,
            signal: Some(s),
        })
    }

    #[test]
    fn exit_status_maps_to_a_state() {
        check(code(0), None, State::Complete, None);
        check(
            code(3),
            None,
            State::ExecutorError,
            Some("process exited with status 3"),
        );
        check(
            code(127),
            None,
            State::ExecutorError,
            Some("process exited with status 127"),
        );
        check(
            signal(9),
            None,
            State::ExecutorError,
            Some("process was killed by signal 9 (SIGKILL)"),
        );
        check(
            signal(11),
            None,
            State::ExecutorError,
            Some("process was killed by signal 11 (SIGSEGV)"),
        );
    }

    #[test]
    fn a_stop_request_wins_over_the_exit_status() {
        check(signal(15), Some(StopReason::Cancel), State::Canceled, None);
        check(code(0), Some(StopReason::Cancel), State::Canceled, None);
        check(None, Some(StopReason::Cancel), State::Canceled, None);
        check(
            signal(9),
            Some(StopReason::Shutdown),
            State::SystemError,
            Some(SHUTDOWN_ERROR),
        );
        check(
            None,
            Some(StopReason::Abort("lost".into())),
            State::SystemError,
            Some("lost"),
        );
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(999), "999");
    }
}
