//! The span reference: one heading per span the span registry declares
//! (`crates/telemetry/spans.toml`: kind, service, meaning, each attribute's type, requirement
//! level and meaning — semantic-convention ones from the conventions themselves), with the
//! values, events and scenarios the committed snapshots (`scenarios/snapshots/*.snap`) show
//! for it. Nothing is restated by hand: a span in a snapshot the registry does not declare, an
//! attribute it does not declare, or a declared span no snapshot shows without a
//! `not_in_snapshots` reason, is a problem that fails `check`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use spantree::registry::{Registry, SpanSpec};

use super::{cell, preamble};
use crate::snapshot::{Snapshot, Span};

/// Values shown per attribute before "…".
const MAX_VALUES: usize = 6;

#[derive(Default)]
struct Seen {
    names: BTreeSet<String>,
    values: BTreeMap<String, BTreeSet<String>>,
    events: BTreeSet<String>,
    scenarios: BTreeSet<String>,
    errors: bool,
}

/// The heading anchor mdBook gives `text` (lowercase, spaces to dashes, most punctuation
/// dropped).
/// At most this many scenario links per span; the rest are counted.
const MAX_SCENARIOS: usize = 6;

/// A value as the reference shows it: at most 80 characters.
fn shorten(value: &str) -> String {
    if value.chars().count() <= 80 {
        value.to_owned()
    } else {
        let cut: String = value.chars().take(77).collect();
        format!("{cut}…")
    }
}

fn anchor(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '_' || c == '-' => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// The heading of a declared span.
fn heading(spec: &SpanSpec) -> String {
    let name = spec.title.as_deref().unwrap_or(&spec.name);
    format!("{name} ({}, {})", spec.service, spec.kind)
}

/// Generates `spans.md` from the registry and the snapshots; returns it and the problems.
pub fn generate(registry: &Registry, snapshots: &[Snapshot]) -> Result<(String, Vec<String>)> {
    let mut problems = Vec::new();
    let mut seen: Vec<Seen> = registry.spans.iter().map(|_| Seen::default()).collect();
    for snap in snapshots {
        for trace in &snap.traces {
            for root in &trace.roots {
                root.walk(0, &mut |s: &Span, _| {
                    let kind = s.kind.as_deref().unwrap_or("internal");
                    if s.name == spantree::MISSING_PARENT {
                        // Drawn by the tree for a parent that never arrived; nobody emits it.
                        return;
                    }
                    let Some((i, spec)) = registry.lookup(&s.service, &s.name, Some(kind)) else {
                        problems.push(format!(
                            "snapshot {}: span `{}` ({}, {kind}) is not declared in the span registry",
                            snap.name, s.name, s.service
                        ));
                        return;
                    };
                    let row = &mut seen[i];
                    row.names.insert(s.name.clone());
                    for (k, v) in &s.attrs {
                        if registry.declared(spec, k).is_none() {
                            problems.push(format!(
                                "snapshot {}: span `{}` carries `{k}`, which the span registry does not declare for it",
                                snap.name, s.name
                            ));
                        }
                        row.values.entry(k.clone()).or_default().insert(v.clone());
                    }
                    for e in &s.events {
                        row.events.insert(e.message.clone().unwrap_or_default());
                    }
                    row.scenarios.insert(snap.name.clone());
                    row.errors |= s.is_error();
                });
            }
        }
    }
    let mut out = preamble(
        "spans",
        "crates/telemetry/spans.toml (the span registry) and scenarios/snapshots/*.snap",
    );
    if !registry.common.is_empty() {
        out.push_str("\nOn every span (the registry's common attributes, not repeated below):\n\n");
        for c in &registry.common {
            out.push_str(&format!(
                "- **`{}`** — {}. {} Left out of trees (SDK noise).\n",
                c.name,
                c.ty.map_or("no type".to_owned(), |t| format!("`{t}`")),
                c.meaning.replace('\n', " ")
            ));
        }
    }
    out.push_str("\n| span | service | kind | in scenarios |\n| --- | --- | --- | --- |\n");
    for (spec, row) in registry.spans.iter().zip(&seen) {
        out.push_str(&format!(
            "| [`{}`](#{}) | {} | {} | {} |\n",
            cell(spec.title.as_deref().unwrap_or(&spec.name)),
            anchor(&heading(spec)),
            spec.service,
            spec.kind,
            if row.scenarios.is_empty() {
                "—".to_owned()
            } else {
                row.scenarios.len().to_string()
            }
        ));
    }
    for (spec, row) in registry.spans.iter().zip(&seen) {
        out.push_str(&format!("\n### {}\n\n{}\n", heading(spec), spec.meaning));
        if row.scenarios.is_empty() {
            match &spec.not_in_snapshots {
                Some(why) => out.push_str(&format!("\n*In no snapshot:* {why}\n")),
                None => problems.push(format!(
                    "span `{}` ({}) is declared in the span registry but no snapshot shows it; give a `not_in_snapshots` reason or remove it",
                    spec.name, spec.service
                )),
            }
        } else {
            if spec.name.contains('*') {
                let names: Vec<String> = row.names.iter().map(|n| format!("`{n}`")).collect();
                out.push_str(&format!(
                    "\nNamed `{}`; as the snapshots name it: {}.\n",
                    spec.name,
                    names.join(", ")
                ));
            }
            if row.errors {
                out.push_str("\nIt may end with an ERROR status (`!ERROR` in a tree).\n");
            }
        }
        // The attributes as a list (a five-column table does not fit the page): name, type,
        // requirement, where the name comes from, the meaning, what the snapshots show.
        out.push_str("\nAttributes:\n\n");
        for a in &spec.attributes {
            let ty = a.ty.map_or("the convention gives no type".to_owned(), |t| {
                format!("`{t}`")
            });
            let origin = a.semconv.map_or_else(String::new, |c| {
                format!(
                    ", semantic convention ({})",
                    if c.stable { "stable" } else { "experimental" }
                )
            });
            let collision = a
                .collision
                .as_ref()
                .map_or_else(String::new, |c| format!(" *Name:* {c}"));
            let values = match row.values.get(&a.name) {
                None => "none shown".to_owned(),
                Some(v) => {
                    let mut shown: Vec<String> = v
                        .iter()
                        .take(MAX_VALUES)
                        .map(|x| format!("`{}`", shorten(x)))
                        .collect();
                    if v.len() > MAX_VALUES {
                        shown.push("…".to_owned());
                    }
                    shown.join(", ")
                }
            };
            out.push_str(&format!(
                "- **`{}`** — {ty}, {}{origin}. {}{collision}  \n  In snapshots: {values}.\n",
                a.name,
                a.requirement.name(),
                a.meaning.replace('\n', " "),
            ));
        }
        if spec.attributes.is_empty() {
            out.push_str("- none of its own.\n");
        }
        let mut events: Vec<String> = spec.events.clone();
        for e in &row.events {
            if !events.contains(e) {
                problems.push(format!(
                    "span `{}` ({}) carries the event `{e}` in a snapshot, but the span registry does not list it",
                    spec.name, spec.service
                ));
                events.push(e.clone());
            }
        }
        if !events.is_empty() {
            let list: Vec<String> = events.iter().map(|e| format!("`{e}`")).collect();
            out.push_str(&format!("\nEvents: {}.\n", list.join(", ")));
        }
        if !row.scenarios.is_empty() {
            let list: Vec<String> = row
                .scenarios
                .iter()
                .take(MAX_SCENARIOS)
                .map(|s| format!("[{s}](../scenarios/{s}.md)"))
                .collect();
            let more = row.scenarios.len().saturating_sub(MAX_SCENARIOS);
            out.push_str(&format!(
                "\nIn {}: {}{}.\n",
                if row.scenarios.len() == 1 {
                    "1 scenario".to_owned()
                } else {
                    format!("{} scenarios", row.scenarios.len())
                },
                list.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ));
        }
    }
    Ok((out, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(name: &str, body: &str) -> Snapshot {
        Snapshot::parse(name, &format!("---\nx: y\n---\n{body}")).unwrap()
    }

    fn registry() -> Registry {
        Registry::parse(
            r#"
[[common]]
name = "target"
type = "string"
meaning = "the module"

[[span]]
name = "*"
title = "HTTP server span"
service = "metis-api"
kind = "server"
meaning = "HTTP server span."
attributes = [
  { name = "http.route", semconv = true, requirement = "required" },
  { name = "http.response.status_code", semconv = true },
]

[[span]]
name = "create_run"
service = "metis-api"
kind = "internal"
meaning = "Creates a run."
events = ["Run created"]
attributes = [
  { name = "run_id", type = "string", meaning = "The run." },
  { name = "error", type = "string", meaning = "Why not." },
]

[[span]]
name = "workflow_run"
service = "metis-engine-generic"
kind = "consumer"
meaning = "One run."
"#,
        )
        .unwrap()
    }

    #[test]
    fn sections_come_from_the_registry_and_values_from_the_snapshots() {
        let a = snap(
            "a",
            "trace#1\nmetis-api  POST /runs  [server]  http.route=/runs\n└─ create_run  run_id=[run#1]\n   └─ event INFO \"Run created\"\n",
        );
        let b = snap(
            "b",
            "trace#1\nmetis-api  POST /runs  [server]  http.response.status_code=400\n└─ create_run  error=boom\n",
        );
        let (md, problems) = generate(&registry(), &[a, b]).unwrap();
        assert!(md.contains("### HTTP server span (metis-api, server)\n\nHTTP server span.\n\nNamed `*`; as the snapshots name it: `POST /runs`."), "{md}");
        assert!(
            md.contains("| [`HTTP server span`](#http-server-span-metis-api-server) |"),
            "{md}"
        );
        assert!(
            md.contains("- **`http.response.status_code`** — `int`, recommended, semantic convention (stable)."),
            "{md}"
        );
        assert!(
            md.contains(
                "- **`run_id`** — `string`, recommended. The run.  \n  In snapshots: `[run#1]`."
            ),
            "{md}"
        );
        assert!(
            md.contains("On every span (the registry's common attributes, not repeated below):\n\n- **`target`**"),
            "{md}"
        );
        assert_eq!(md.matches("**`target`**").count(), 1, "{md}");
        assert!(
            md.contains("In 2 scenarios: [a](../scenarios/a.md), [b](../scenarios/b.md)."),
            "{md}"
        );
        // Declared but never seen, with no reason given.
        assert!(
            problems
                .iter()
                .any(|p| p.contains("`workflow_run`") && p.contains("not_in_snapshots")),
            "{problems:?}"
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    #[test]
    fn undeclared_spans_attributes_and_events_are_problems() {
        let s = snap(
            "a",
            "trace#1\nmetis-api  GET /mystery  [server]  mood=odd\n└─ delete_run\n",
        );
        let (_, problems) = generate(&registry(), &[s]).unwrap();
        let all = problems.join("\n");
        assert!(all.contains("carries `mood`"), "{all}");
        assert!(
            all.contains("span `delete_run` (metis-api, internal) is not declared"),
            "{all}"
        );
    }

    /// The e2e lint (and `spantree check`) and the book's span reference apply one rule: on
    /// one dump, they flag the same undeclared attributes — a semantic-convention one too —
    /// and pass the same declared ones.
    #[test]
    fn the_lint_and_the_book_agree_on_every_attribute() {
        let dump = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"metis-api"}}]},"scopeSpans":[{"scope":{"name":"metis-api"},"spans":[
            {"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","name":"POST /runs","kind":2,"startTimeUnixNano":"1000","endTimeUnixNano":"5000","status":{},
             "attributes":[{"key":"http.route","value":{"stringValue":"/runs"}},{"key":"server.address","value":{"stringValue":"metis"}},{"key":"mood","value":{"stringValue":"odd"}}]},
            {"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"00f067aa0ba902b7","parentSpanId":"b7ad6b7169203331","name":"create_run","kind":1,"startTimeUnixNano":"2000","endTimeUnixNano":"4000","status":{},
             "attributes":[{"key":"run_id","value":{"stringValue":"r1"}},{"key":"target","value":{"stringValue":"api"}}]}
        ]}]}]}"#;
        let data = spantree::dump::parse("dump", dump).unwrap();
        let registry = registry();
        let lint: BTreeSet<String> = spantree::lint::lint(&data, Some(&registry))
            .iter()
            .filter_map(|f| f.problem.split('`').nth(1).map(str::to_owned))
            .collect();
        let forest = spantree::SpanForest::from_otlp(&data, &spantree::Options::new()).unwrap();
        let (_, problems) = generate(&registry, &[snap("dump", &forest.render())]).unwrap();
        let book: BTreeSet<String> = problems
            .iter()
            .filter_map(|p| {
                p.split("carries `")
                    .nth(1)?
                    .split('`')
                    .next()
                    .map(str::to_owned)
            })
            .collect();
        let expected: BTreeSet<String> = ["mood", "server.address"].map(str::to_owned).into();
        assert_eq!(lint, expected, "the lint's findings");
        assert_eq!(book, expected, "the book's problems: {problems:?}");
    }

    #[test]
    fn anchors_match_mdbook() {
        assert_eq!(
            anchor("create_run (metis-api, internal)"),
            "create_run-metis-api-internal"
        );
        assert_eq!(
            anchor("publish metis.runs.* (metis-api, producer)"),
            "publish-metisruns-metis-api-producer"
        );
    }

    #[test]
    fn the_committed_snapshots_are_fully_described() {
        let ws = crate::Workspace::locate();
        let snaps = Snapshot::load_all(&ws.snapshots_dir()).unwrap();
        let registry = Registry::load(&ws.root.join("crates/telemetry/spans.toml")).unwrap();
        let (_, problems) = generate(&registry, &snaps).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
