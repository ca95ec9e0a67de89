//! Bugs injected on purpose, so a test can prove that the chaos checker (`harness::chaos`)
//! finds a real bug in the engine and the shrinker cuts its schedule down.
//!
//! `METIS_TEST_BUG=<name>` turns one on, in **debug builds only**: a release build compiles
//! the lookup out and never reads the variable, so no deployment can carry one. An engine
//! with a bug on says so in a warning at start-up.
//!
//! | name | the engine then |
//! | --- | --- |
//! | `orphans` | starts a run's sandbox without `--die-with-parent` and keeps its process group from the [`crate::keeper`]: a SIGKILLed engine leaves its runs' processes behind |

use std::sync::OnceLock;

/// The variable that names the bug (debug builds only).
pub const VAR: &str = common::settings::TEST_BUG;

/// A bug the engine can be told to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// A SIGKILLed engine leaves its runs' processes behind.
    Orphans,
}

impl Bug {
    /// Its name in [`VAR`].
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Orphans => "orphans",
        }
    }
}

/// The bug this engine was told to have, if any (always `None` in a release build). An
/// unknown name is no bug, and [`warn_if_injected`] says so.
#[must_use]
pub fn active() -> Option<Bug> {
    requested().0
}

fn requested() -> &'static (Option<Bug>, Option<String>) {
    static ONCE: OnceLock<(Option<Bug>, Option<String>)> = OnceLock::new();
    ONCE.get_or_init(|| {
        #[cfg(debug_assertions)]
        {
            let Some(value) = std::env::var_os(VAR) else {
                return (None, None);
            };
            let value = value.to_string_lossy().into_owned();
            let bug = [Bug::Orphans].into_iter().find(|b| b.name() == value);
            (bug, Some(value))
        }
        #[cfg(not(debug_assertions))]
        {
            (None, None)
        }
    })
}

/// Logs a warning when a bug is on (or the variable names none).
pub fn warn_if_injected() {
    match requested() {
        (Some(bug), _) => telemetry::tracing::warn!(
            bug = bug.name(),
            "{VAR} is set: this engine has a bug injected on purpose (tests only)"
        ),
        (None, Some(value)) => telemetry::tracing::warn!(
            value = %value,
            "{VAR} names no known bug (known: orphans); none injected"
        ),
        (None, None) => {}
    }
}

/// `argv` of a sandbox as the bug would start it: without bubblewrap's `--die-with-parent`
/// (the options before the first `--`; the workflow's own arguments are left alone).
#[must_use]
pub fn sandbox_argv(argv: Vec<String>) -> Vec<String> {
    if active() != Some(Bug::Orphans) {
        return argv;
    }
    let mut options = true;
    argv.into_iter()
        .filter(|a| {
            if a == "--" {
                options = false;
            }
            !(options && a == "--die-with-parent")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_bug_unless_asked() {
        // The test process does not set the variable.
        if std::env::var_os(VAR).is_none() {
            assert_eq!(active(), None);
            let argv = vec!["--die-with-parent".to_owned(), "sh".to_owned()];
            assert_eq!(sandbox_argv(argv.clone()), argv);
        }
    }
}
