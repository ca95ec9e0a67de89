//! Progress output: every long step is announced on stderr when it starts and reported with
//! its elapsed time when it ends, so a slow or stuck check says where it is.

use std::time::Instant;

/// A step in progress; [`Step::done`] reports it.
#[must_use = "call .done() when the step ends"]
pub struct Step {
    what: String,
    start: Instant,
}

/// Announces a step.
pub fn step(what: impl Into<String>) -> Step {
    let what = what.into();
    eprintln!("book: {what} …");
    Step {
        what,
        start: Instant::now(),
    }
}

impl Step {
    /// Reports the step as finished.
    pub fn done(self) {
        eprintln!(
            "book: {} — done in {:.1}s",
            self.what,
            self.start.elapsed().as_secs_f64()
        );
    }

    /// Reports the step as finished with a result.
    pub fn done_with(self, result: impl std::fmt::Display) {
        eprintln!(
            "book: {} — {result} ({:.1}s)",
            self.what,
            self.start.elapsed().as_secs_f64()
        );
    }
}
