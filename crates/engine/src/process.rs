//! Starting the workflow process and signalling its process group.
//!
//! A workflow is someone else's code: it gets a cleared environment ([`workflow_env`]), never
//! the engine's (`NATS_*` credentials, `OTEL_*`, `ENGINE_CONFIG_PATH` stay with the engine).
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

/// `PATH` for workflows when the engine has none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The whole environment of a workflow: `PATH` (the engine's, or [`DEFAULT_PATH`]), `HOME` =
/// the workdir, `TMPDIR` = `<workdir>/tmp` (created), `LANG` (the engine's, or `C.UTF-8`),
/// then the engine.yaml's `runs.env` (which may override `PATH` and `LANG`).
pub async fn workflow_env(
    workdir: &Path,
    declared: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, EngineError> {
    let tmp = workdir.join("tmp");
    crate::workdir::create_private(&tmp).await?;
    let mut env = std::collections::BTreeMap::new();
    let inherited = |k: &str, default: &str| {
        std::env::var(k)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    env.insert("PATH".to_owned(), inherited("PATH", DEFAULT_PATH));
    env.insert("LANG".to_owned(), inherited("LANG", "C.UTF-8"));
    env.extend(declared.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.insert("HOME".to_owned(), workdir.to_string_lossy().into_owned());
    env.insert("TMPDIR".to_owned(), tmp.to_string_lossy().into_owned());
    Ok(env.into_iter().collect())
}

/// Spawns `argv` in `workdir` with exactly `env`, in a new process group. Returns the child
/// and its group id.
pub fn spawn(
    argv: &[String],
    workdir: &Path,
    env: &[(String, String)],
) -> Result<(Child, i32), EngineError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| EngineError::Command("the command is empty".into()))?;
    let child = Command::new(program)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
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
    // Inside the sandbox: SIGTERM to bwrap itself would end the sandbox with no grace.
    crate::sandbox::signal_run(pgid, Signal::SIGTERM);
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
        let (child, pgid) = spawn(&argv, dir.path(), &[]).unwrap();
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
    async fn a_workflow_sees_only_the_allowlist_and_the_declared_variables() {
        // The test process has plenty of its own (CARGO_*, RUST_*, HOME, …): none may pass.
        assert!(std::env::vars().any(|(k, _)| k.starts_with("CARGO")));
        let dir = tempfile::tempdir().unwrap();
        let declared = std::collections::BTreeMap::from([("GREETING".to_owned(), "hi".to_owned())]);
        let env = workflow_env(dir.path(), &declared).await.unwrap();
        let argv: Vec<String> = ["/bin/sh", "-c", "env"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let (child, _) = spawn(&argv, dir.path(), &env).unwrap();
        let out = child.wait_with_output().await.unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            // What sh itself adds.
            .filter(|k| !matches!(*k, "PWD" | "SHLVL" | "_" | "OLDPWD"))
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["GREETING", "HOME", "LANG", "PATH", "TMPDIR"],
            "{text}"
        );
        let home = dir.path().display().to_string();
        assert!(text.contains(&format!("HOME={home}\n")), "{text}");
        assert!(text.contains(&format!("TMPDIR={home}/tmp\n")), "{text}");
        assert!(dir.path().join("tmp").is_dir());
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let err = spawn(&["/nonexistent/prog".to_owned()], Path::new("/"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("start /nonexistent/prog"), "{err}");
        assert!(spawn(&[], Path::new("/"), &[]).is_err());
    }

    #[tokio::test]
    async fn terminate_group_stops_the_whole_group() {
        let argv: Vec<String> = ["sh", "-c", "sleep 300 & wait"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let env = [("PATH".to_owned(), DEFAULT_PATH.to_owned())];
        let (mut child, pgid) = spawn(&argv, Path::new("/"), &env).unwrap();
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
