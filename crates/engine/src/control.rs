//! Bookkeeping of the runs in flight on this instance, and the stop flag that makes cancel
//! work in every phase.
//!
//! Each run has one [`RunControl`]. A cancel (or shutdown) calls [`RunControl::stop`]: it
//! records the reason and, when the process is alive, returns its process group to signal.
//! The run task asks [`RunControl::stop_reason`] before spawning and registers the process
//! with [`RunControl::started`] right after: if a stop came in between, `started` refuses and
//! the task kills the process at once. So a cancel that arrives before the process exists
//! still stops the run, and no signal is sent to a process group after its leader was reaped
//! ([`RunControl::exited`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use common::RunId;

use crate::outcome::StopReason;

#[derive(Debug, Default)]
struct Inner {
    stop: Option<StopReason>,
    pgid: Option<i32>,
    exited: bool,
    canceling_seen: bool,
}

/// What a stop request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAction {
    /// The process is alive: signal this process group.
    Signal(i32),
    /// No process yet: the run task will not start one.
    NotStarted,
    /// The process has already exited.
    Exited,
}

/// The stop flag and process group of one run.
#[derive(Debug, Default)]
pub struct RunControl {
    inner: Mutex<Inner>,
}

impl RunControl {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks the run to stop. The first reason sticks (a shutdown after a cancel still ends
    /// CANCELED); a stop that comes after the process exited changes nothing (the outcome is
    /// the exit status). Says whether there is a live process group to signal.
    pub fn stop(&self, reason: StopReason) -> StopAction {
        let mut inner = self.lock();
        if inner.stop.is_none() && !inner.exited {
            inner.stop = Some(reason);
        }
        match (inner.exited, inner.pgid) {
            (true, _) => StopAction::Exited,
            (false, Some(pgid)) => StopAction::Signal(pgid),
            (false, None) => StopAction::NotStarted,
        }
    }

    /// Notes that the record was seen CANCELING; true the second time (the cancel message,
    /// normally sent right after the record changed, had its chance first).
    pub fn canceling_seen_again(&self) -> bool {
        let mut inner = self.lock();
        std::mem::replace(&mut inner.canceling_seen, true)
    }

    /// Why the run must stop, if it must.
    #[must_use]
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.lock().stop.clone()
    }

    /// Registers the spawned process group. `Err(reason)` when a stop came first: the caller
    /// must kill the group itself.
    pub fn started(&self, pgid: i32) -> Result<(), StopReason> {
        let mut inner = self.lock();
        inner.pgid = Some(pgid);
        match &inner.stop {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }

    /// Records that the process was reaped; later stops signal nothing.
    pub fn exited(&self) {
        self.lock().exited = true;
    }

    /// The process group while the process is alive.
    #[must_use]
    pub fn live_group(&self) -> Option<i32> {
        let inner = self.lock();
        if inner.exited { None } else { inner.pgid }
    }
}

/// The runs in flight on this instance, by id.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    runs: Arc<Mutex<HashMap<RunId, Arc<RunControl>>>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<RunId, Arc<RunControl>>> {
        self.runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a run (before it is claimed, so a cancel racing the claim finds it).
    pub fn insert(&self, id: RunId) -> Arc<RunControl> {
        let control = Arc::new(RunControl::default());
        self.lock().insert(id, control.clone());
        control
    }

    /// Adds a run unless it is already in flight here (one atomic step, so two deliveries of
    /// one run on two threads cannot both go ahead).
    pub fn insert_new(&self, id: RunId) -> Option<Arc<RunControl>> {
        let mut runs = self.lock();
        if runs.contains_key(&id) {
            return None;
        }
        let control = Arc::new(RunControl::default());
        runs.insert(id, control.clone());
        Some(control)
    }

    /// The run's control, when it is in flight here.
    #[must_use]
    pub fn get(&self, id: &RunId) -> Option<Arc<RunControl>> {
        self.lock().get(id).cloned()
    }

    /// Drops a run's bookkeeping.
    pub fn remove(&self, id: &RunId) {
        self.lock().remove(id);
    }

    /// Every run in flight.
    #[must_use]
    pub fn all(&self) -> Vec<(RunId, Arc<RunControl>)> {
        self.lock().iter().map(|(k, v)| (*k, v.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_before_spawn_is_seen_before_and_after_spawning() {
        let c = RunControl::default();
        assert_eq!(
            c.stop(StopReason::Cancel),
            StopAction::NotStarted,
            "no process to signal yet"
        );
        assert_eq!(c.stop_reason(), Some(StopReason::Cancel));
        assert_eq!(
            c.started(42),
            Err(StopReason::Cancel),
            "the task must kill what it spawned"
        );
    }

    #[test]
    fn a_stop_racing_the_spawn_is_caught_by_started() {
        let c = RunControl::default();
        assert_eq!(c.stop_reason(), None, "checked before spawn: go ahead");
        assert_eq!(
            c.stop(StopReason::Cancel),
            StopAction::NotStarted,
            "arrives while spawning"
        );
        assert_eq!(c.started(42), Err(StopReason::Cancel));
    }

    #[test]
    fn a_stop_while_running_signals_the_group_once_alive_only() {
        let c = RunControl::default();
        assert_eq!(c.started(42), Ok(()));
        assert_eq!(c.live_group(), Some(42));
        assert_eq!(c.stop(StopReason::Cancel), StopAction::Signal(42));
        assert_eq!(
            c.stop(StopReason::Shutdown),
            StopAction::Signal(42),
            "shutdown may still kill it"
        );
        assert_eq!(
            c.stop_reason(),
            Some(StopReason::Cancel),
            "the first reason sticks"
        );
        c.exited();
        assert_eq!(
            c.stop(StopReason::Cancel),
            StopAction::Exited,
            "never signal a reaped group"
        );
        assert_eq!(c.live_group(), None);
    }

    #[test]
    fn a_cancel_after_the_exit_leaves_the_outcome_to_the_exit_status() {
        let c = RunControl::default();
        assert_eq!(c.started(42), Ok(()));
        c.exited();
        assert_eq!(c.stop(StopReason::Cancel), StopAction::Exited);
        assert_eq!(
            c.stop_reason(),
            None,
            "exit 0 before the cancel is COMPLETE"
        );
    }

    #[test]
    fn a_canceling_record_counts_on_the_second_sight() {
        let c = RunControl::default();
        assert!(!c.canceling_seen_again());
        assert!(c.canceling_seen_again());
    }

    #[test]
    fn registry_tracks_runs() {
        let r = Registry::default();
        let id = RunId::new();
        let c = r.insert(id);
        assert!(Arc::ptr_eq(&r.get(&id).unwrap(), &c));
        assert_eq!(r.all().len(), 1);
        r.remove(&id);
        assert!(r.get(&id).is_none());
    }
}
