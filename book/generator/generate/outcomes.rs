//! The table of how a run ends, from the code: `engine::outcome::outcome` is called for one
//! case of each kind (an exit status, a signal, each stop reason, no process at all) and the
//! state and `error` it returns are what the table shows. Change the mapping and the page is
//! stale.

use engine::outcome::{Exit, StopReason, outcome};

use super::{cell, preamble};

/// The cases: what happened, the exit (if a process ran) and the stop request (if any).
fn cases() -> Vec<(&'static str, Option<Exit>, Option<StopReason>)> {
    let code = |c| {
        Some(Exit {
            code: Some(c),
            signal: None,
        })
    };
    let signal = |s| {
        Some(Exit {
            code: None,
            signal: Some(s),
        })
    };
    vec![
        ("exit status 0", code(0), None),
        ("exit status 3 (any n ≠ 0)", code(3), None),
        (
            "killed by a signal nobody asked for (here SIGKILL)",
            signal(9),
            None,
        ),
        (
            "the process ended without an exit status or a signal",
            Some(Exit::default()),
            None,
        ),
        (
            "a cancel was carried out: the process was signalled (SIGTERM, here)",
            signal(15),
            Some(StopReason::Cancel),
        ),
        (
            "a cancel came before the process existed",
            None,
            Some(StopReason::Cancel),
        ),
        (
            "a cancel came too late: the process had already exited 0",
            code(0),
            None,
        ),
        (
            "the engine shut down before the run finished",
            signal(15),
            Some(StopReason::Shutdown),
        ),
        (
            "the engine aborted the run (its record changed or vanished, it was ended elsewhere, NATS failed); the reason is the run's",
            None,
            Some(StopReason::Abort("<the reason>".to_owned())),
        ),
        ("no process ever ran and nobody stopped it", None, None),
    ]
}

/// Generates `outcomes.md`.
pub fn generate() -> anyhow::Result<(String, Vec<String>)> {
    let mut md = preamble("outcomes", "engine::outcome::outcome, called for each case");
    md.push_str("\n| what happened | state | `error` |\n| --- | --- | --- |\n");
    for (what, exit, stop) in cases() {
        let (state, error) = outcome(exit, stop.as_ref());
        md.push_str(&format!(
            "| {} | `{}` | {} |\n",
            cell(what),
            state.as_str(),
            error.map_or_else(|| "—".to_owned(), |e| format!("`{}`", cell(&e)))
        ));
    }
    Ok((md, Vec::new()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_table_is_what_the_function_returns() {
        let (md, _) = super::generate().unwrap();
        assert!(md.contains("| exit status 0 | `COMPLETE` | — |"), "{md}");
        assert!(
            md.contains(
                "| exit status 3 (any n ≠ 0) | `EXECUTOR_ERROR` | `process exited with status 3` |"
            ),
            "{md}"
        );
        assert!(
            md.contains("`process was killed by signal 9 (SIGKILL)`"),
            "{md}"
        );
    }
}
