//! Starting the workflow process and signalling its process group.
//!
//! The process is spawned directly from the argv (no shell), in its own process group
//! (`pgid = pid`), with stdin closed and stdout/stderr piped. Every signal goes to the whole
//! group, so children of the workflow (a `sleep` under `sh`) stop with it. A cancel is SIGTERM,
//! then SIGKILL after the grace period if the process is still alive. When the group leader
//! exits, whatever is left of its group is killed: nothing a run started outlives it.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::EngineError;
use crate::control::RunControl;

/// Spawns `argv` in `workdir`, in a new process group. Returns the child and its group id.
pub fn spawn(argv: &[String], workdir: &Path) -> Result<(Child, i32), EngineError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| EngineError::Command("the command is empty".into()))?;
    let child = Command::new(program)
        .args(args)
        .current_dir(workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| EngineError::Spawn {
            program: program.clone(),
            source,
        })?;
    let pid = child.id().ok_or_else(|| EngineError::Spawn {
        program: program.clone(),
        source: std::io::Error::other("the process exited before its id was read"),
    })?;
    let pgid = i32::try_from(pid).map_err(|_| EngineError::Spawn {
        program: program.clone(),
        source: std::io::Error::other(format!("process id {pid} is out of range")),
    })?;
    Ok((child, pgid))
}

/// Sends `signal` to process group `pgid`; a group that is already gone is not an error.
pub fn signal_group(pgid: i32, signal: Signal) {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => {
            tracing::warn!(pgid, signal = %signal, error = %e, "signalling the process group failed")
        }
    }
}

/// SIGTERM to the group now; SIGKILL after `grace` unless the process has exited by then.
/// Returns at once (the escalation runs in the background).
pub fn terminate_group(pgid: i32, grace: Duration, control: Arc<RunControl>) {
    signal_group(pgid, Signal::SIGTERM);
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        if control.live_group() == Some(pgid) {
            tracing::info!(
                pgid,
                "process still alive after the grace period; sending SIGKILL"
            );
            signal_group(pgid, Signal::SIGKILL);
        }
    });
}

/// Kills a group whose leader is gone (or must go) at once.
pub fn kill_group(pgid: i32) {
    signal_group(pgid, Signal::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spawn_runs_the_argv_without_a_shell_in_its_own_group() {
        let dir = tempfile::tempdir().unwrap();
        let argv: Vec<String> = ["sh", "-c", "echo \"$1\"; pwd", "sh", "$(id); x"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let (child, pgid) = spawn(&argv, dir.path()).unwrap();
        assert_eq!(Some(pgid as u32), child.id());
        let out = child.wait_with_output().await.unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("$(id); x"),
            "the argument reached sh literally"
        );
        assert_eq!(
            std::fs::canonicalize(lines.next().unwrap()).unwrap(),
            std::fs::canonicalize(dir.path()).unwrap()
        );
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let err = spawn(&["/nonexistent/prog".to_owned()], Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("start /nonexistent/prog"), "{err}");
        assert!(spawn(&[], Path::new("/")).is_err());
    }

    #[tokio::test]
    async fn terminate_group_stops_the_whole_group() {
        let argv: Vec<String> = ["sh", "-c", "sleep 300 & wait"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let (mut child, pgid) = spawn(&argv, Path::new("/")).unwrap();
        let control = Arc::new(RunControl::default());
        control.started(pgid).unwrap();
        terminate_group(pgid, Duration::from_secs(60), control.clone());
        let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .unwrap()
            .unwrap();
        control.exited();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(15));
    }
}
