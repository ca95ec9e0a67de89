//! Choosing where NATS and the fake OTLP receiver run.
//!
//! `E2E_BACKEND=docker|local|auto` (default `auto`). *auto* picks docker when a Docker engine
//! answers (`docker version` within a few seconds), else local, and says which and why. An
//! explicitly chosen backend that is unavailable is an error, never a silent skip.

use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};

/// Where the infrastructure runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Containers through testcontainers.
    Docker,
    /// Child processes on this machine.
    Local,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Docker => "docker",
            Backend::Local => "local",
        })
    }
}

/// Whether a Docker engine answers, with the reason when it does not.
pub fn docker_available() -> Result<String, String> {
    let mut child = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("the docker CLI could not be run ({e})"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20)); // polling a child with a deadline, not synchronisation
            }
            _ => {
                let _ = child.kill();
                return Err("`docker version` did not answer within 10s".to_owned());
            }
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "the Docker engine did not answer: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Picks the backend from `E2E_BACKEND` (a value, for tests) and the Docker probe; returns it
/// with a sentence saying why.
pub fn choose(
    setting: Option<&str>,
    probe: impl Fn() -> Result<String, String>,
) -> Result<(Backend, String)> {
    match setting
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("auto")
    {
        "docker" => match probe() {
            Ok(v) => Ok((
                Backend::Docker,
                format!("E2E_BACKEND=docker (Docker engine {v})"),
            )),
            Err(why) => {
                bail!("E2E_BACKEND=docker but {why}; start Docker or use E2E_BACKEND=local")
            }
        },
        "local" => Ok((Backend::Local, "E2E_BACKEND=local".to_owned())),
        "auto" => match probe() {
            Ok(v) => Ok((
                Backend::Docker,
                format!("auto: a Docker engine answers (version {v})"),
            )),
            Err(why) => Ok((Backend::Local, format!("auto: {why}, so local processes"))),
        },
        other => bail!("E2E_BACKEND must be docker, local or auto, got '{other}'"),
    }
}

/// [`choose`] with the real environment and probe.
pub fn from_env() -> Result<(Backend, String)> {
    choose(
        std::env::var("E2E_BACKEND").ok().as_deref(),
        docker_available,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection() {
        let up = || Ok("28.2".to_owned());
        let down = || Err("no engine".to_owned());
        assert_eq!(choose(None, up).unwrap().0, Backend::Docker);
        let (b, why) = choose(Some("auto"), down).unwrap();
        assert_eq!(b, Backend::Local);
        assert!(why.contains("no engine"), "{why}");
        assert_eq!(choose(Some("local"), up).unwrap().0, Backend::Local);
        let err = choose(Some("docker"), down).unwrap_err().to_string();
        assert!(
            err.contains("E2E_BACKEND=docker") && err.contains("no engine"),
            "{err}"
        );
        assert!(
            choose(Some("podman"), up)
                .unwrap_err()
                .to_string()
                .contains("podman")
        );
    }
}
