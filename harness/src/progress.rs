//! Progress output and the harness's own timeline.
//!
//! Every long step (building an image, starting NATS, waiting for readiness, collecting spans)
//! is announced when it starts and reported with its elapsed time when it ends, on stderr
//! (written directly, so the test runner's capture does not swallow it) and in
//! `target/e2e/<scenario>/timeline.txt`, so a failure artefact says what the harness did and
//! waited for. `E2E_QUIET=1` silences stderr; the file is always written.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A scenario's timeline.
#[derive(Clone)]
pub struct Timeline {
    inner: Arc<Inner>,
}

struct Inner {
    scenario: String,
    start: Instant,
    file: Option<PathBuf>,
    lines: Mutex<Vec<String>>,
    quiet: bool,
}

impl Timeline {
    /// A timeline for `scenario`, written to `file` when given.
    #[must_use]
    pub fn new(scenario: &str, file: Option<&Path>) -> Self {
        if let Some(f) = file {
            let _ = std::fs::write(f, "");
        }
        Self {
            inner: Arc::new(Inner {
                scenario: scenario.to_owned(),
                start: Instant::now(),
                file: file.map(Path::to_path_buf),
                lines: Mutex::new(Vec::new()),
                quiet: std::env::var_os("E2E_QUIET").is_some_and(|v| v == "1"),
            }),
        }
    }

    /// Time since the timeline started.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.inner.start.elapsed()
    }

    /// Records one line.
    pub fn note(&self, msg: impl AsRef<str>) {
        let line = format!("[{:>7.3}s] {}", self.elapsed().as_secs_f64(), msg.as_ref());
        if !self.inner.quiet {
            let _ = writeln!(std::io::stderr(), "e2e {}: {line}", self.inner.scenario);
        }
        if let Some(f) = &self.inner.file
            && let Ok(mut file) = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(f)
        {
            let _ = writeln!(file, "{line}");
        }
        self.inner
            .lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line);
    }

    /// Announces a step; the returned guard reports its duration when finished or dropped.
    pub fn step(&self, what: impl Into<String>) -> Step {
        let what = what.into();
        self.note(format!("… {what}"));
        Step {
            timeline: self.clone(),
            what,
            start: Instant::now(),
            done: false,
        }
    }

    /// Every line so far.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        self.inner
            .lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A running step.
pub struct Step {
    timeline: Timeline,
    what: String,
    start: Instant,
    done: bool,
}

impl Step {
    /// Reports success with the elapsed time; returns it.
    pub fn done(mut self) -> Duration {
        self.done = true;
        let d = self.start.elapsed();
        self.timeline
            .note(format!("✓ {} ({:.2}s)", self.what, d.as_secs_f64()));
        d
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if !self.done {
            self.timeline.note(format!(
                "✗ {} (gave up after {:.2}s)",
                self.what,
                self.start.elapsed().as_secs_f64()
            ));
        }
    }
}
