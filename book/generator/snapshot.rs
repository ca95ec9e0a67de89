//! Reading the committed span-tree snapshots (`scenarios/snapshots/*.snap`).
//!
//! A snapshot is an insta header (`---` … `---`) followed by the tree the harness rendered
//! (format documented in `harness/spantree/src/lib.rs`). [`Snapshot::load`] strips the header and
//! keeps the body byte for byte — that is what the book shows — and [`parse_tree`] reads the
//! body with spantree's own parser ([`spantree::parse`], the one owner of the format) into a
//! small view ([`Trace`], [`Span`], [`Event`]) for the generators that need structure: the
//! span table and the timelines. A line the parser cannot place is an error naming the
//! snapshot and the line, so a format change fails the book instead of drawing nonsense.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};

/// One committed snapshot.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// File stem, e.g. `run_completes`.
    pub name: String,
    /// The tree exactly as committed, without the insta header.
    pub body: String,
    /// The parsed tree.
    pub traces: Vec<Trace>,
}

/// One `trace#N` block.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// The header line, e.g. `trace#1`.
    pub header: String,
    /// Root spans, in rendered order.
    pub roots: Vec<Span>,
}

/// One span line and what hangs under it.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// The service, inherited from the parent when the line does not repeat it.
    pub service: String,
    /// Span name, e.g. `create_run` or `POST /runs`.
    pub name: String,
    /// `server`, `client`, `producer`, `consumer`; `None` for internal spans.
    pub kind: Option<String>,
    /// `OK`, `!ERROR` or `!ERROR "message"`; `None` when unset.
    pub status: Option<String>,
    /// `key=value` pairs in rendered order (values as rendered, quotes included).
    pub attrs: Vec<(String, String)>,
    /// Events, in rendered (time) order.
    pub events: Vec<Event>,
    /// Child spans, in rendered order.
    pub children: Vec<Span>,
}

/// One event line.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `INFO`, `WARN`, … when shown.
    pub level: Option<String>,
    /// The message, unquoted.
    pub message: Option<String>,
    /// `key=value` pairs in rendered order.
    pub attrs: Vec<(String, String)>,
}

impl Span {
    /// Whether the span's status is an error.
    #[must_use]
    pub fn is_error(&self) -> bool {
        self.status
            .as_deref()
            .is_some_and(|s| s.starts_with("!ERROR"))
    }

    /// This span and every descendant, depth first, with their depth.
    pub fn walk(&self, depth: usize, visit: &mut dyn FnMut(&Span, usize)) {
        visit(self, depth);
        for c in &self.children {
            c.walk(depth + 1, visit);
        }
    }
}

impl Snapshot {
    /// Loads `<dir>/<name>.snap`. A missing file is an error naming the snapshot and listing
    /// the ones that exist.
    pub fn load(dir: &Path, name: &str) -> Result<Self> {
        let path = dir.join(format!("{name}.snap"));
        if !path.is_file() {
            let known = list(dir).unwrap_or_default();
            bail!(
                "no snapshot named `{name}` ({} does not exist); known snapshots: {}",
                path.display(),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            );
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Self::parse(name, &text).with_context(|| format!("reading snapshot {}", path.display()))
    }

    /// Parses the text of a `.snap` file.
    pub fn parse(name: &str, text: &str) -> Result<Self> {
        let body = strip_header(text)?;
        let traces = parse_tree(&body)?;
        Ok(Self {
            name: name.to_owned(),
            body,
            traces,
        })
    }

    /// Loads every snapshot in `dir`, sorted by name.
    pub fn load_all(dir: &Path) -> Result<Vec<Self>> {
        list(dir)?
            .iter()
            .map(|name| Self::load(dir, name))
            .collect()
    }
}

/// The snapshot names (file stems of `*.snap`) in `dir`, sorted.
pub fn list(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path: PathBuf = entry?.path();
        if path.extension().is_some_and(|e| e == "snap")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            names.push(stem.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// The snapshot body: everything after insta's `---` … `---` header, ending in one newline.
pub fn strip_header(text: &str) -> Result<String> {
    let mut lines = text.lines();
    ensure!(
        lines.next() == Some("---"),
        "expected an insta header starting with `---`"
    );
    for line in lines.by_ref() {
        if line == "---" {
            let body: Vec<&str> = lines.collect();
            let body = body.join("\n");
            let body = body.trim_end_matches('\n');
            return Ok(format!("{body}\n"));
        }
    }
    bail!("the insta header is not closed by a second `---`")
}

/// Parses a rendered forest or census (the snapshot body) with spantree's own parser
/// ([`spantree::parse`], the one owner of the format) and takes the view the book's
/// generators draw from. A line the parser cannot place is an error naming it.
pub fn parse_tree(body: &str) -> Result<Vec<Trace>> {
    let parsed = spantree::parse(body).context("the tree does not parse")?;
    Ok(parsed
        .traces()
        .into_iter()
        .map(|(header, trace)| Trace {
            header,
            roots: trace.roots().iter().map(view).collect(),
        })
        .collect())
}

/// The book's view of one parsed span.
fn view(node: &spantree::SpanNode) -> Span {
    let text = |attrs: &[(String, spantree::Value)]| -> Vec<(String, String)> {
        attrs
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect()
    };
    Span {
        service: node.service().to_owned(),
        name: node.name().to_owned(),
        kind: (node.kind() != spantree::SpanKind::Internal).then(|| node.kind().to_string()),
        status: node.status().render(),
        attrs: text(node.attributes()),
        events: node
            .events()
            .iter()
            .map(|e| Event {
                level: e.level.clone(),
                message: (!e.message.is_empty()).then(|| e.message.clone()),
                attrs: text(&e.attributes),
            })
            .collect(),
        children: node.children().iter().map(view).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNAP: &str = r#"---
source: scenarios/tests/it/support.rs
description: "span tree"
---
trace#1
metis-api  POST /runs  [server]  http.response.status_code=200 http.route=/runs
└─ create_run  run_id=[run#1] user_id=alice
   ├─ event INFO "Run created and dispatched" run_id=[run#1]
   └─ publish metis.runs.generic.1.SH.1  [producer]  messaging.system=nats
      └─ metis-engine-generic  workflow_run  [consumer]  !ERROR "exit  3"  api_trace_id=→create_run error="process exited with status 3" state=EXECUTOR_ERROR
         ├─ event INFO phase state=initializing
         └─ event INFO "workflow run finished"

trace#2
metis-api  POST /runs/{run_id}/cancel  [server]  url.path=/runs/[run#1]/cancel
└─ request_cancel  run_id=[run#1]
"#;

    #[test]
    fn strips_the_insta_header_and_keeps_the_body() {
        let s = Snapshot::parse("x", SNAP).unwrap();
        assert!(
            s.body.starts_with("trace#1\nmetis-api  POST /runs"),
            "{}",
            s.body
        );
        assert!(s.body.ends_with("└─ request_cancel  run_id=[run#1]\n"));
    }

    #[test]
    fn parses_services_kinds_status_events_and_children() {
        let s = Snapshot::parse("x", SNAP).unwrap();
        assert_eq!(s.traces.len(), 2);
        let root = &s.traces[0].roots[0];
        assert_eq!(
            (root.service.as_str(), root.name.as_str()),
            ("metis-api", "POST /runs")
        );
        assert_eq!(root.kind.as_deref(), Some("server"));
        let create = &root.children[0];
        assert_eq!(create.service, "metis-api", "inherited");
        assert_eq!(
            create.events[0].message.as_deref(),
            Some("Run created and dispatched")
        );
        let publish = &create.children[0];
        assert_eq!(publish.name, "publish metis.runs.generic.1.SH.1");
        let run = &publish.children[0];
        assert_eq!(
            (run.service.as_str(), run.name.as_str()),
            ("metis-engine-generic", "workflow_run")
        );
        assert_eq!(run.status.as_deref(), Some("!ERROR \"exit  3\""));
        assert!(run.is_error());
        assert_eq!(
            run.attrs[1],
            (
                "error".to_owned(),
                "\"process exited with status 3\"".to_owned()
            )
        );
        assert_eq!(run.events[0].message.as_deref(), Some("phase"));
        assert_eq!(
            run.events[0].attrs,
            [("state".to_owned(), "initializing".to_owned())]
        );
        assert_eq!(s.traces[1].roots[0].children[0].name, "request_cancel");
    }

    #[test]
    fn every_committed_snapshot_parses() {
        let dir = crate::Workspace::locate().snapshots_dir();
        let all = Snapshot::load_all(&dir).unwrap();
        assert!(!all.is_empty(), "no snapshots in {}", dir.display());
        for s in all {
            assert!(!s.traces.is_empty(), "{} has no trace", s.name);
        }
    }

    #[test]
    fn a_missing_snapshot_is_named() {
        let dir = crate::Workspace::locate().snapshots_dir();
        let err = Snapshot::load(&dir, "no_such_scenario")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no_such_scenario") && err.contains("run_completes"),
            "{err}"
        );
    }

    #[test]
    fn a_header_less_file_is_an_error() {
        let err = Snapshot::parse("x", "trace#1\n").unwrap_err().to_string();
        assert!(err.contains("insta header"), "{err}");
    }

    #[test]
    fn a_line_out_of_place_is_an_error_naming_it() {
        let err = parse_tree("trace#1\nmetis-api  a\n      └─ b\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 3"), "{err:#}");
        assert!(format!("{err:#}").contains("└─ b"), "{err:#}");
    }

    #[test]
    fn a_census_labels_each_trace_with_its_shape() {
        let traces =
            parse_tree("shape#1 ×3\ntrace#1\nmetis-api  a\n\nshape#2 ×1\ntrace#1\nmetis-api  b\n")
                .unwrap();
        let headers: Vec<&str> = traces.iter().map(|t| t.header.as_str()).collect();
        assert_eq!(headers, ["shape#1 ×3 trace#1", "shape#2 ×1 trace#1"]);
        assert_eq!(traces[1].roots[0].name, "b");
    }
}
