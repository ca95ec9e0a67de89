//! The span table: every span the snapshots contain, with its service, kind, fields, events
//! and the scenarios it appears in — computed from `scenarios/snapshots/*.snap`, so the table
//! cannot claim a field the tests do not see, nor miss one they do.
//!
//! The one thing a snapshot cannot say is what a span *means*: that is [`MEANINGS`], one
//! sentence per span name (a trailing `*` matches a prefix, for names that carry a subject).
//! A span in the snapshots without a meaning, or a meaning no snapshot uses, is a problem that
//! fails `check`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;

use super::{cell, preamble};
use crate::snapshot::{Snapshot, Span};

/// What each span is for. Keep one sentence; the table says the rest.
pub const MEANINGS: &[(&str, &str)] = &[
    (
        "POST /runs",
        "HTTP server span of a run submission (tower-http, named after the route template); its status code says whether the run was accepted.",
    ),
    (
        "POST /runs/{run_id}/cancel",
        "HTTP server span of a cancel request.",
    ),
    (
        "GET /runs/{run_id}",
        "HTTP server span of a read of one run. Successful reads are left out of snapshots (scenarios poll); a failed one (here another user's run: 404) is always kept.",
    ),
    (
        "submit workflow",
        "The caller's own client span (service `e2e-client`, exported by its own OpenTelemetry SDK): the API's server span continues its `traceparent`, so the run's trace starts in the client.",
    ),
    (
        "create_run",
        "Validates the request against the registered engines, stores the run `QUEUED` and dispatches it; `error` carries the reason of a 400. Its OpenTelemetry span id travels in the run message as `trace_id`.",
    ),
    (
        "publish metis.runs.*",
        "Producer span of the JetStream publish of the run message; its context is the message's `traceparent` header.",
    ),
    (
        "request_cancel",
        "Cancels a run: `QUEUED` → `CANCELED` at once, `INITIALIZING`/`RUNNING` → `CANCELING` plus a cancel message to the owning engine, a finished run → 409 with `error`.",
    ),
    (
        "publish metis.cancel.*",
        "Producer span of the cancel message on the owning engine's core subject.",
    ),
    (
        "workflow_run",
        "One run on the engine, a child of the API's producer span: one `phase` event per phase, `state` ends as the final run state, `api_trace_id` points back at `create_run`.",
    ),
    (
        "reap_run",
        "The API's reaper ending a run nobody runs any more (its engine stopped heartbeating, or does not list the run): `state` is what it wrote (`SYSTEM_ERROR`, or `CANCELED` for a run being cancelled), `reason` why. A root span of its own trace.",
    ),
    (
        "redispatch_run",
        "The API's reconciler publishing a `QUEUED` run again whose message is nowhere (the API died before publishing, or the message was lost); the engine's `workflow_run` joins its trace.",
    ),
    (
        "workflow_cancel",
        "Carries out a cancel message on the engine (SIGTERM to the run's process group; the SIGKILL after the grace period happens outside the span).",
    ),
];

/// The [`MEANINGS`] key that describes `name`: an exact key, else the longest prefix key.
fn meaning_key(name: &str) -> Option<&'static str> {
    MEANINGS
        .iter()
        .find(|(k, _)| *k == name)
        .or_else(|| {
            MEANINGS
                .iter()
                .filter(|(k, _)| k.strip_suffix('*').is_some_and(|p| name.starts_with(p)))
                .max_by_key(|(k, _)| k.len())
        })
        .map(|(k, _)| *k)
}

#[derive(Default)]
struct Row {
    kinds: BTreeSet<String>,
    fields: BTreeSet<String>,
    events: Vec<String>,
    scenarios: BTreeSet<String>,
    errors: bool,
}

/// Generates `spans.md`; returns it and the problems found.
pub fn generate(snapshots: &[Snapshot]) -> Result<(String, Vec<String>)> {
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    for snap in snapshots {
        for trace in &snap.traces {
            for root in &trace.roots {
                root.walk(0, &mut |s: &Span, _| {
                    let row = rows.entry((s.service.clone(), s.name.clone())).or_default();
                    row.kinds
                        .insert(s.kind.clone().unwrap_or_else(|| "internal".to_owned()));
                    row.fields.extend(s.attrs.iter().map(|(k, _)| k.clone()));
                    for e in &s.events {
                        let m = e.message.clone().unwrap_or_default();
                        if !row.events.contains(&m) {
                            row.events.push(m);
                        }
                    }
                    row.scenarios.insert(snap.name.clone());
                    row.errors |= s.is_error();
                });
            }
        }
    }
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    let mut out = preamble("spans", "scenarios/snapshots/*.snap");
    out.push_str(
        "\n| span | service | kind | fields | events | in scenarios |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for ((service, name), row) in &rows {
        match meaning_key(name) {
            Some(k) => {
                used.insert(k);
            }
            None => problems.push(format!(
                "span `{name}` ({service}) is in the snapshots but has no meaning in MEANINGS (book/generator/generate/spans.rs)"
            )),
        }
        let fields = if row.fields.is_empty() {
            "—".to_owned()
        } else {
            row.fields
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let events = if row.events.is_empty() {
            "—".to_owned()
        } else {
            row.events
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let scenarios = row
            .scenarios
            .iter()
            .map(|s| format!("[{s}](scenarios.md#{s})"))
            .collect::<Vec<_>>()
            .join(", ");
        let kind = row.kinds.iter().cloned().collect::<Vec<_>>().join(", ");
        let name_cell = if row.errors {
            format!("`{name}` (may end `!ERROR`)")
        } else {
            format!("`{name}`")
        };
        let cells = [name_cell, service.clone(), kind, fields, events, scenarios];
        let cells: Vec<String> = cells.iter().map(|c| cell(c)).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out.push_str("\nWhat each span is for:\n\n");
    for (key, meaning) in MEANINGS {
        if !used.contains(key) {
            problems.push(format!(
                "MEANINGS describes `{key}` but no snapshot contains such a span; remove it"
            ));
            continue;
        }
        out.push_str(&format!("- `{key}` — {meaning}\n"));
    }
    Ok((out, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(name: &str, body: &str) -> Snapshot {
        Snapshot::parse(name, &format!("---\nx: y\n---\n{body}")).unwrap()
    }

    #[test]
    fn rows_come_from_the_snapshots() {
        let a = snap(
            "a",
            "trace#1\nmetis-api  POST /runs  [server]  http.route=/runs\n└─ create_run  run_id=[run#1]\n   └─ event INFO \"Run created\"\n",
        );
        let b = snap(
            "b",
            "trace#1\nmetis-api  POST /runs  [server]  http.response.status_code=400\n└─ create_run  error=boom\n",
        );
        let (md, problems) = generate(&[a, b]).unwrap();
        assert!(
            md.contains("| `POST /runs` | metis-api | server | `http.response.status_code`, `http.route` | — | [a](scenarios.md#a), [b](scenarios.md#b) |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| `create_run` | metis-api | internal | `error`, `run_id` | `Run created` |"
            ),
            "{md}"
        );
        // The meanings of spans these snapshots lack are reported as stale.
        assert!(
            problems.iter().any(|p| p.contains("`workflow_run`")),
            "{problems:?}"
        );
        assert!(
            !problems.iter().any(|p| p.contains("`create_run`")),
            "{problems:?}"
        );
    }

    #[test]
    fn a_span_without_a_meaning_is_a_problem() {
        let s = snap("a", "trace#1\nmetis-api  GET /mystery  [server]\n");
        let (_, problems) = generate(&[s]).unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("`GET /mystery`") && p.contains("MEANINGS")),
            "{problems:?}"
        );
    }

    #[test]
    fn prefix_meanings_match_subjects() {
        assert_eq!(
            meaning_key("publish metis.runs.generic.1.SH.1"),
            Some("publish metis.runs.*")
        );
        assert_eq!(
            meaning_key("publish metis.cancel.[engine#1]"),
            Some("publish metis.cancel.*")
        );
        assert_eq!(meaning_key("nope"), None);
    }

    #[test]
    fn the_committed_snapshots_are_fully_described() {
        let snaps = Snapshot::load_all(&crate::Workspace::locate().snapshots_dir()).unwrap();
        let (_, problems) = generate(&snaps).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
