//! The group keeper: workflow processes die when their engine dies, however it dies.
//!
//! A run's process lives in its own process group, and the engine signals that group when a
//! run is cancelled, ends or the engine shuts down. An engine that is SIGKILLed (or crashes)
//! signals nothing, so this module starts one small helper per engine instance: the engine's
//! own binary re-executed with [`KEEPER_ARG`], in a process group of its own (a Ctrl-C aimed
//! at the engine's terminal does not reach it), reading a pipe whose write end only the
//! engine holds (close-on-exec, so no workflow inherits it). The engine writes `+<pgid>` when
//! a run's group starts and `-<pgid>` when it is gone. When the pipe reaches end of file —
//! the kernel closes it when the engine exits, for any reason — the keeper SIGKILLs every
//! group still registered and exits. No `unsafe` and no `PR_SET_PDEATHSIG` are needed, and
//! grandchildren (a `sleep` under `sh`) die with their group, which a parent-death signal on
//! the direct child alone would not achieve.
//!
//! An engine binary must call [`run_if_requested`] first thing in `main` (the runtime's
//! [`crate::main`] does). If the keeper dies, the next registration starts a new one and
//! hands it every live group.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// The first argument that turns the engine binary into a keeper.
pub const KEEPER_ARG: &str = "__metis-group-keeper";

/// If this process was started as a keeper, runs it and exits; otherwise returns at once.
pub fn run_if_requested() {
    if std::env::args().nth(1).as_deref() == Some(KEEPER_ARG) {
        let groups = serve(std::io::stdin().lock());
        for pgid in groups {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
        std::process::exit(0);
    }
}

/// Reads `+pgid`/`-pgid` lines until end of input; returns the groups still registered.
fn serve(input: impl BufRead) -> BTreeSet<i32> {
    let mut groups = BTreeSet::new();
    for line in input.lines() {
        let Ok(line) = line else { break };
        let (op, rest) = line.split_at(line.len().min(1));
        match (op, rest.trim().parse::<i32>()) {
            ("+", Ok(pgid)) if pgid > 1 => {
                groups.insert(pgid);
            }
            ("-", Ok(pgid)) => {
                groups.remove(&pgid);
            }
            _ => {}
        }
    }
    groups
}

/// The engine's end: registers and releases process groups with the keeper.
#[derive(Default)]
pub struct Keeper {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    child: Option<(Child, ChildStdin)>,
    groups: BTreeSet<i32>,
}

impl Keeper {
    /// From now on, `pgid` is killed if this engine dies.
    pub fn watch(&self, pgid: i32) {
        let mut inner = self.lock();
        inner.groups.insert(pgid);
        if !inner.send(&format!("+{pgid}\n")) {
            inner.restart();
        }
    }

    /// `pgid` is gone (or no longer this engine's business).
    pub fn release(&self, pgid: i32) {
        let mut inner = self.lock();
        if inner.groups.remove(&pgid) {
            let _ = inner.send(&format!("-{pgid}\n"));
        }
    }

    /// The keeper's process id, when one runs (for tests).
    pub fn pid(&self) -> Option<u32> {
        self.lock().child.as_ref().map(|(c, _)| c.id())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Inner {
    /// Writes to a running keeper; false when there is none or it is gone.
    fn send(&mut self, line: &str) -> bool {
        match self.child.as_mut() {
            Some((_, stdin)) => stdin
                .write_all(line.as_bytes())
                .and_then(|()| stdin.flush())
                .is_ok(),
            None => false,
        }
    }

    /// Starts a (new) keeper and registers every live group with it.
    fn restart(&mut self) {
        if let Some((mut old, stdin)) = self.child.take() {
            drop(stdin);
            let _ = old.kill();
            let _ = old.wait();
        }
        let exe = match std::env::current_exe() {
            Ok(exe) => exe,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the group keeper: the engine's own path is unknown; workflows may outlive a crashed engine");
                return;
            }
        };
        let spawned = {
            use std::os::unix::process::CommandExt;
            Command::new(&exe)
                .arg(KEEPER_ARG)
                .env_clear()
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
        };
        match spawned {
            Ok(mut child) => {
                let Some(stdin) = child.stdin.take() else {
                    return;
                };
                tracing::debug!(pid = child.id(), "group keeper started");
                self.child = Some((child, stdin));
                let lines: String = self.groups.iter().map(|g| format!("+{g}\n")).collect();
                if !self.send(&lines) {
                    tracing::warn!(
                        "the group keeper exited at once; workflows may outlive a crashed engine"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(exe = %exe.display(), error = %e, "cannot start the group keeper; workflows may outlive a crashed engine");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keeper_remembers_what_is_still_registered() {
        let input = b"+100\n+200\n-100\n+1\n+x\n\n-300\n+300\n";
        let left = serve(&input[..]);
        assert_eq!(left.into_iter().collect::<Vec<_>>(), [200, 300]);
    }
}
