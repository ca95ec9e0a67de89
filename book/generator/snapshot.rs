//! Reading the committed span-tree snapshots (`scenarios/snapshots/*.snap`).
//!
//! A snapshot is an insta header (`---` … `---`) followed by the tree the harness rendered
//! (format documented in `harness/spantree/src/lib.rs`). [`Snapshot::load`] strips the header and
//! keeps the body byte for byte — that is what the book shows — and [`parse_tree`] reads the
//! body back into a small model ([`Trace`], [`Span`], [`Event`]) for the generators that need
//! structure: the span table and the timelines. The parser is strict: a line it cannot place
//! is an error naming the snapshot and the line, so a format change in the harness fails the
//! book instead of silently drawing nonsense.

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
    /// `span#N` when the line carries an alias.
    pub alias: Option<String>,
    /// `server`, `client`, `producer`, `consumer`; `None` for internal spans.
    pub kind: Option<String>,
    /// `OK`, `!ERROR` or `!ERROR "message"`; `None` when unset.
    pub status: Option<String>,
    /// `key=value` pairs in rendered order (values as rendered, quotes included).
    pub attrs: Vec<(String, String)>,
    /// The `resource …` line where the service enters the trace, as rendered after `resource `.
    pub resource: Option<String>,
    /// The `scope …` line there, as rendered after `scope `.
    pub scope: Option<String>,
    /// Events, in rendered (time) order.
    pub events: Vec<Event>,
    /// Link lines, as rendered after `link `.
    pub links: Vec<String>,
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

/// A parsed line: its depth and what it is.
enum Line {
    Span(Span),
    Resource(String),
    Scope(String),
    Event(Event),
    Link(String),
}

/// Parses a rendered forest (the snapshot body) into traces.
pub fn parse_tree(body: &str) -> Result<Vec<Trace>> {
    let mut traces: Vec<Trace> = Vec::new();
    // Path of open spans: (depth, span). Closed into their parent when a shallower line comes.
    let mut stack: Vec<(usize, Span)> = Vec::new();
    // A census (`harness::tree::shape_census`) puts `shape#N ×COUNT` above each trace.
    let mut shape: Option<String> = None;
    for (no, raw) in body.lines().enumerate() {
        let at = || format!("line {}: `{raw}`", no + 1);
        if raw.trim().is_empty() {
            continue;
        }
        if raw.starts_with("shape#") {
            close_all(&mut stack, &mut traces)?;
            shape = Some(raw.to_owned());
            continue;
        }
        if raw.starts_with("trace#") && !raw.contains(' ') {
            close_all(&mut stack, &mut traces)?;
            traces.push(Trace {
                header: match shape.take() {
                    Some(label) => format!("{label} {raw}"),
                    None => raw.to_owned(),
                },
                roots: Vec::new(),
            });
            continue;
        }
        ensure!(
            !traces.is_empty(),
            "{}: a span before any `trace#N` header",
            at()
        );
        let (depth, rest) = split_prefix(raw).with_context(at)?;
        // Pop spans that are not ancestors of this line.
        while stack.last().is_some_and(|(d, _)| *d >= depth) {
            close_one(&mut stack, &mut traces)?;
        }
        ensure!(
            depth == 0 || stack.last().is_some_and(|(d, _)| *d + 1 == depth),
            "{}: indented {depth} levels but its parent is not a span one level up",
            at()
        );
        let parent_service = stack.last().map(|(_, s)| s.service.as_str());
        match parse_line(rest, parent_service).with_context(at)? {
            Line::Span(span) => stack.push((depth, span)),
            Line::Resource(text) | Line::Scope(text) => {
                let is_resource = rest.starts_with("resource ");
                let (_, parent) = stack
                    .last_mut()
                    .with_context(|| format!("{}: a resource or scope outside a span", at()))?;
                ensure!(
                    parent.events.is_empty()
                        && parent.links.is_empty()
                        && parent.children.is_empty()
                        && parent.scope.is_none()
                        && !(is_resource && parent.resource.is_some()),
                    "{}: a resource or scope line after events, links, child spans or a scope",
                    at()
                );
                if is_resource {
                    parent.resource = Some(text);
                } else {
                    parent.scope = Some(text);
                }
            }
            Line::Event(e) => {
                let (_, parent) = stack
                    .last_mut()
                    .with_context(|| format!("{}: an event outside a span", at()))?;
                ensure!(
                    parent.children.is_empty() && parent.links.is_empty(),
                    "{}: an event after links or child spans",
                    at()
                );
                parent.events.push(e);
            }
            Line::Link(l) => {
                let (_, parent) = stack
                    .last_mut()
                    .with_context(|| format!("{}: a link outside a span", at()))?;
                ensure!(
                    parent.children.is_empty(),
                    "{}: a link after child spans",
                    at()
                );
                parent.links.push(l);
            }
        }
    }
    close_all(&mut stack, &mut traces)?;
    Ok(traces)
}

fn close_one(stack: &mut Vec<(usize, Span)>, traces: &mut [Trace]) -> Result<()> {
    let (_, span) = stack.pop().context("internal: empty stack")?;
    match stack.last_mut() {
        Some((_, parent)) => parent.children.push(span),
        None => traces
            .last_mut()
            .context("a span before any trace header")?
            .roots
            .push(span),
    }
    Ok(())
}

fn close_all(stack: &mut Vec<(usize, Span)>, traces: &mut [Trace]) -> Result<()> {
    while !stack.is_empty() {
        close_one(stack, traces)?;
    }
    Ok(())
}

/// Splits the tree-drawing prefix (`│  `, `   `, `├─ `, `└─ `, three columns per level) off a
/// line; returns the depth and the rest.
fn split_prefix(line: &str) -> Result<(usize, &str)> {
    let mut depth = 0;
    let mut rest = line;
    loop {
        if let Some(r) = rest
            .strip_prefix("├─ ")
            .or_else(|| rest.strip_prefix("└─ "))
        {
            return Ok((depth + 1, r));
        }
        if let Some(r) = rest
            .strip_prefix("│  ")
            .or_else(|| rest.strip_prefix("   "))
        {
            depth += 1;
            rest = r;
            continue;
        }
        ensure!(
            depth == 0,
            "continuation columns without a `├─ `/`└─ ` connector"
        );
        return Ok((0, rest));
    }
}

fn parse_line(rest: &str, parent_service: Option<&str>) -> Result<Line> {
    if let Some(ev) = rest.strip_prefix("event")
        && (ev.is_empty() || ev.starts_with(' '))
    {
        return Ok(Line::Event(parse_event(ev.trim_start())?));
    }
    if let Some(link) = rest.strip_prefix("link ") {
        return Ok(Line::Link(link.to_owned()));
    }
    if let Some(resource) = rest.strip_prefix("resource ") {
        return Ok(Line::Resource(resource.to_owned()));
    }
    if let Some(scope) = rest.strip_prefix("scope ") {
        return Ok(Line::Scope(scope.to_owned()));
    }
    let span = parse_span(rest, parent_service)?;
    Ok(Line::Span(span))
}

fn parse_event(text: &str) -> Result<Event> {
    let mut tokens = split_unquoted(text, " ")?.into_iter().peekable();
    let level = tokens
        .next_if(|t| matches!(t.as_str(), "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR"))
        .map(|t| t.to_owned());
    let message = tokens.next_if(|t| !is_attr(t)).map(|t| unquote(&t));
    let attrs = tokens.map(|t| split_attr(&t)).collect::<Result<_>>()?;
    Ok(Event {
        level,
        message,
        attrs,
    })
}

fn parse_span(text: &str, parent_service: Option<&str>) -> Result<Span> {
    let cols = split_unquoted(text, "  ")?;
    let mut cols = cols.into_iter().peekable();
    let first = cols.next().context("an empty span line")?;
    let (service, name) = match parent_service {
        // A root always names its service.
        None => (
            first,
            cols.next().context("a root span line without a name")?,
        ),
        // Deeper, the service is shown only where it changes; it is one token followed by a
        // name column (not an alias, kind, status or the attribute column).
        Some(parent) => match cols.peek() {
            Some(next) if !first.contains(' ') && is_name_column(next) => {
                let name = cols.next().context("internal")?;
                (first, name)
            }
            _ => (parent.to_owned(), first),
        },
    };
    let mut span = Span {
        service,
        name,
        alias: None,
        kind: None,
        status: None,
        attrs: Vec::new(),
        resource: None,
        scope: None,
        events: Vec::new(),
        links: Vec::new(),
        children: Vec::new(),
    };
    for col in cols {
        if let Some(alias) = col.strip_prefix('(').and_then(|c| c.strip_suffix(')')) {
            span.alias = Some(alias.to_owned());
        } else if let Some(kind) = col.strip_prefix('[').and_then(|c| c.strip_suffix(']')) {
            span.kind = Some(kind.to_owned());
        } else if col == "OK" || col.starts_with("!ERROR") {
            span.status = Some(col);
        } else {
            for token in split_unquoted(&col, " ")? {
                span.attrs.push(split_attr(&token)?);
            }
        }
    }
    Ok(span)
}

/// Whether a column can be a span name (so the column before it was a service).
fn is_name_column(col: &str) -> bool {
    !(col.starts_with("(span#")
        || (col.starts_with('[') && col.ends_with(']') && !col.contains(' '))
        || col == "OK"
        || col.starts_with("!ERROR")
        || col.split(' ').next().is_some_and(is_attr))
}

/// `key=value` (the key unquoted, before the first `=`).
fn is_attr(token: &str) -> bool {
    !token.starts_with('"') && token.contains('=')
}

fn split_attr(token: &str) -> Result<(String, String)> {
    let (k, v) = token
        .split_once('=')
        .with_context(|| format!("expected key=value, got `{token}`"))?;
    Ok((k.to_owned(), v.to_owned()))
}

/// Removes the quotes and `\"`, `\\`, `\n` escapes of a quoted string; bare strings stay.
pub fn unquote(s: &str) -> String {
    let Some(inner) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return s.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Splits on `sep` outside double-quoted strings (which may contain escaped quotes).
fn split_unquoted(text: &str, sep: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut rest = text;
    while !rest.is_empty() {
        if !in_quote && rest.starts_with(sep) {
            out.push(std::mem::take(&mut cur));
            rest = &rest[sep.len()..];
            continue;
        }
        let c = rest.chars().next().context("internal")?;
        rest = &rest[c.len_utf8()..];
        cur.push(c);
        if c == '\\' && in_quote {
            if let Some(n) = rest.chars().next() {
                cur.push(n);
                rest = &rest[n.len_utf8()..];
            }
        } else if c == '"' {
            in_quote = !in_quote;
        }
    }
    ensure!(!in_quote, "unterminated quote in `{text}`");
    out.push(cur);
    Ok(out.into_iter().filter(|c| !c.is_empty()).collect())
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
