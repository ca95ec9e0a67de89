//! The text rendering of a [`SpanForest`] (the format is specified in the [`tree`](super)
//! module docs). Pure functions of the model: equal forests render byte-identically.
//!
//! Two things are layout, not model: the legend (every distinct resource and scope, listed
//! once above the traces under the key span lines name it by) and wrapping (a line longer
//! than [`WIDTH`] columns continues on indented lines, broken only before an attribute).

use std::fmt;

use super::model::{Entry, Event, Link, SpanForest, SpanKind, SpanNode, Status, StatusCode, Value};

/// The column a rendered line should not pass: a line continues on the next (indented
/// four columns past its tree drawing) before an attribute that would pass it. One
/// attribute longer than the room left still stands on a line of its own.
pub const WIDTH: usize = 100;

/// Span attributes that lead the attribute column, in this order, because a reviewer looks
/// for them first; the rest follow sorted by key.
pub const LEADING_ATTRIBUTES: [&str; 6] = [
    "error",
    "error.type",
    "exception.type",
    "exception.message",
    "state",
    "http.response.status_code",
];

impl SpanForest {
    /// The whole forest as text: the legend (when any span has a resource or scope), then
    /// `trace#N` headers, one line per span, event and link, traces separated by a blank
    /// line, a final newline.
    pub fn render(&self) -> String {
        let legend = Legend::of([self]);
        let mut out = legend.render();
        out.push_str(&self.render_traces(&legend));
        out
    }

    /// The traces alone, naming resources and scopes by `legend`'s keys.
    pub(crate) fn render_traces(&self, legend: &Legend) -> String {
        let mut out = String::new();
        for (n, trace) in self.traces.iter().enumerate() {
            if n > 0 {
                out.push('\n');
            }
            out.push_str(&trace.alias);
            out.push('\n');
            for root in &trace.roots {
                tree(&mut out, root, None, legend, "", "");
            }
        }
        out
    }
}

/// One legend entry: the key span lines name it by, its service, its resource and scope.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LegendEntry {
    /// The service, or `SERVICE#N` when the service has several entries (numbered in render
    /// order).
    pub(crate) key: String,
    pub(crate) service: String,
    pub(crate) entry: Entry,
}

/// Every distinct (service, resource, scope) of one or more forests, in render order; an
/// entry with neither resource attributes nor a scope is left out (the span line's service
/// column says all there is).
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Legend {
    pub(crate) entries: Vec<LegendEntry>,
}

impl Legend {
    /// The legend of `forests` (a census shares one across its shapes).
    pub(crate) fn of<'a>(forests: impl IntoIterator<Item = &'a SpanForest>) -> Self {
        let mut seen: Vec<(String, Entry)> = Vec::new();
        for forest in forests {
            for span in forest.spans() {
                // Compared as rendered: what reads the same is one entry (a NaN equals
                // itself, -0.0 and 0.0 do not).
                if let Some(entry) = &span.entry
                    && *entry != Entry::default()
                    && !seen
                        .iter()
                        .any(|(s, e)| *s == span.service && same_entry(e, entry))
                {
                    seen.push((span.service.clone(), entry.clone()));
                }
            }
        }
        let mut numbered: std::collections::HashMap<&str, usize> = Default::default();
        let entries = seen
            .iter()
            .map(|(service, entry)| {
                let several = seen.iter().filter(|(s, _)| s == service).count() > 1;
                let n = numbered.entry(service.as_str()).or_insert(0);
                *n += 1;
                // A number that would spell another service's name is skipped.
                while seen.iter().any(|(s, _)| *s == format!("{service}#{n}")) {
                    *n += 1;
                }
                LegendEntry {
                    key: if several {
                        format!("{service}#{n}")
                    } else {
                        service.clone()
                    },
                    service: service.clone(),
                    entry: entry.clone(),
                }
            })
            .collect();
        Self { entries }
    }

    /// The key of `node`'s entry, when it has one.
    pub(crate) fn key(&self, node: &SpanNode) -> Option<&str> {
        let entry = node.entry.as_ref()?;
        self.entries
            .iter()
            .find(|e| e.service == node.service && same_entry(&e.entry, entry))
            .map(|e| e.key.as_str())
    }

    /// `legend`, then per entry its key and its `resource`/`scope` lines drawn under it, then
    /// a blank line; empty when there are no entries.
    pub(crate) fn render(&self) -> String {
        if self.entries.is_empty() {
            return String::new();
        }
        let mut out = "legend\n".to_owned();
        for e in &self.entries {
            out.push_str(&e.key);
            out.push('\n');
            let lines = entry_lines(&e.entry);
            let total = lines.len();
            for (i, line) in lines.iter().enumerate() {
                let last = i + 1 == total;
                let (connector, below) = if last {
                    ("└─ ", "   ")
                } else {
                    ("├─ ", "│  ")
                };
                push_wrapped(&mut out, connector, line, &format!("{below}    "));
            }
        }
        out.push('\n');
        out
    }
}

/// Whether two entries render the same (the legend's notion of one entry).
fn same_entry(a: &Entry, b: &Entry) -> bool {
    a == b || entry_lines(a) == entry_lines(b)
}

impl fmt::Display for SpanForest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

impl Status {
    /// The status column as a span line shows it: `OK`, `!ERROR`, `!ERROR "message"`;
    /// `None` when unset.
    #[must_use]
    pub fn render(&self) -> Option<String> {
        match self.code {
            StatusCode::Unset => None,
            StatusCode::Ok => Some("OK".to_owned()),
            StatusCode::Error if self.message.is_empty() => Some("!ERROR".to_owned()),
            StatusCode::Error => Some(format!("!ERROR {}", quote(&self.message))),
        }
    }
}

impl SpanNode {
    /// This span's own line as the tree shows it (always with its service), without children.
    pub fn render_line(&self) -> String {
        span_line(self, None, &Legend::default())
    }
}

fn tree(
    out: &mut String,
    node: &SpanNode,
    parent_service: Option<&str>,
    legend: &Legend,
    connector: &str,
    prefix: &str,
) {
    let details: Vec<String> = body_lines(node);
    let total = details.len() + node.children.len();
    let below = if total > 0 { "│   " } else { "    " };
    push_wrapped(
        out,
        connector,
        &span_line(node, parent_service, legend),
        &format!("{prefix}{below}"),
    );
    let mut n = 0;
    let next = |n: &mut usize| {
        *n += 1;
        let last = *n == total;
        (
            format!("{prefix}{}", if last { "└─ " } else { "├─ " }),
            format!("{prefix}{}", if last { "   " } else { "│  " }),
        )
    };
    for line in details {
        let (connector, child_prefix) = next(&mut n);
        push_wrapped(out, &connector, &line, &format!("{child_prefix}    "));
    }
    for child in &node.children {
        let (connector, child_prefix) = next(&mut n);
        tree(
            out,
            child,
            Some(&node.service),
            legend,
            &connector,
            &child_prefix,
        );
    }
}

/// Appends `first` + `content` and a newline, continuing on lines that start with
/// `continuation` when the line would pass [`WIDTH`] (see [`wrap`]).
fn push_wrapped(out: &mut String, first: &str, content: &str, continuation: &str) {
    for (i, piece) in wrap(content, first.chars().count(), continuation.chars().count())
        .into_iter()
        .enumerate()
    {
        out.push_str(if i == 0 { first } else { continuation });
        out.push_str(&piece);
        out.push('\n');
    }
}

/// `content` cut into pieces that fit [`WIDTH`] after an indent of `first` (then
/// `continuation`) columns. It is cut outside quotes before a `key=` token: at one space, or
/// at the two spaces that open a span line's attribute column — then the piece after the cut
/// starts with one space, so a reader joins it back with two. Only where one quoted string
/// alone is longer than the room is it cut inside the string, at a single space between two
/// words (joined back with that one space). A piece with no cut in reach runs long.
pub(crate) fn wrap(content: &str, first: usize, continuation: usize) -> Vec<String> {
    let attribute_cuts = cut_points(content);
    let string_cuts = string_cut_points(content);
    let mut cuts: Vec<(usize, usize)> = attribute_cuts.clone();
    // An in-string cut is used only when no attribute cut fits before it (see below).
    cuts.extend(string_cuts.iter().copied());
    cuts.sort_unstable();
    let is_string_cut = |c: usize| string_cuts.iter().any(|&(s, _)| s == c);
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut lead = "";
    let mut room = WIDTH.saturating_sub(first);
    loop {
        let rest = &content[start..];
        if lead.len() + rest.chars().count() <= room {
            pieces.push(format!("{lead}{rest}"));
            return pieces;
        }
        let fitting = |c: usize| lead.len() + content[start..c].chars().count() <= room;
        let mut after = attribute_cuts.iter().copied().filter(|&(c, _)| c > start);
        let fits = after.clone().take_while(|&(c, _)| fitting(c)).last();
        // No attribute boundary in reach: the last word boundary inside a string that fits.
        let in_string = || {
            cuts.iter()
                .copied()
                .filter(|&(c, _)| c > start && is_string_cut(c))
                .take_while(|&(c, _)| fitting(c))
                .last()
        };
        match fits.or_else(in_string).or_else(|| after.next()) {
            Some((c, width)) => {
                pieces.push(format!("{lead}{}", &content[start..c]));
                start = c + width;
                lead = if width == 2 { " " } else { "" };
                room = WIDTH.saturating_sub(continuation);
            }
            None => {
                pieces.push(format!("{lead}{rest}"));
                return pieces;
            }
        }
    }
}

/// Byte offsets and widths (1 or 2 spaces) of the places [`wrap`] may cut at.
fn cut_points(content: &str) -> Vec<(usize, usize)> {
    let bytes = content.as_bytes();
    let mut cuts = Vec::new();
    let mut quoted = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        if quoted {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => quoted = false,
                _ => {}
            }
            continue;
        }
        if b == b'"' {
            quoted = true;
            continue;
        }
        if b != b' ' || i == 0 || bytes[i - 1] == b' ' {
            continue;
        }
        let width = if bytes.get(i + 1) == Some(&b' ') {
            2
        } else {
            1
        };
        if bytes.get(i + width).is_some_and(|&n| n != b' ')
            && starts_attribute(&content[i + width..])
        {
            cuts.push((i, width));
        }
    }
    cuts
}

/// Byte offsets of the single spaces inside quoted strings with a word on each side: where
/// [`wrap`] may cut a string too long for any line (width 1).
fn string_cut_points(content: &str) -> Vec<(usize, usize)> {
    let bytes = content.as_bytes();
    let mut cuts = Vec::new();
    let mut quoted = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        if !quoted {
            quoted = b == b'"';
            continue;
        }
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => quoted = false,
            b' ' if i > 0
                && !matches!(bytes[i - 1], b' ' | b'"')
                && bytes.get(i + 1).is_some_and(|&n| !matches!(n, b' ' | b'"')) =>
            {
                cuts.push((i, 1));
            }
            _ => {}
        }
    }
    cuts
}

/// Whether `text` starts with `key=` (a key: no space, quote or `=`).
pub(crate) fn starts_attribute(text: &str) -> bool {
    text.find('=')
        .is_some_and(|eq| eq > 0 && !text[..eq].contains([' ', '"', '\\', '[', '{', '(', '→']))
}

/// `[service  ]name[  (span#N)][  [kind]][  status][  attrs]`; the service column is shown
/// where the span has a resource and scope of its own (its legend key; the service when the
/// legend has none) or its service differs from the parent's.
pub(crate) fn span_line(node: &SpanNode, parent_service: Option<&str>, legend: &Legend) -> String {
    let mut line = String::new();
    if let Some(key) = legend.key(node) {
        line.push_str(key);
        line.push_str("  ");
    } else if node.entry.is_some() || parent_service != Some(node.service.as_str()) {
        line.push_str(&node.service);
        line.push_str("  ");
    }
    line.push_str(&name_column(&node.name));
    let rest = span_line_rest(node);
    if !rest.is_empty() {
        line.push_str("  ");
        line.push_str(&rest);
    }
    line
}

/// A span name as its column shows it: bare, or quoted (like a string value) where it is
/// empty, holds a column gap, a control character or an edge space, starts with a quote, or
/// would read as another column (`OK`, `[client]`, `key=value`, …).
pub(crate) fn name_column(name: &str) -> String {
    if name.is_empty()
        || name.contains("  ")
        || name.starts_with('"')
        || name.starts_with(' ')
        || name.ends_with(' ')
        || name.chars().any(char::is_control)
        || !crate::parse::is_name_column(name)
    {
        quote(name)
    } else {
        name.to_owned()
    }
}

/// The attribute a span stands in for a lost one with: its string value says what was lost
/// (`engine killed`), and the span line shows it as `[lost: engine killed]`, after the status.
pub const LOST: &str = "lost";

/// The text of a span's `[lost: …]` column: its `lost` string attribute, when that reads back
/// unchanged (not empty, no column gap, `]`, control character or edge space; else it stays an
/// ordinary attribute).
fn lost_column(node: &SpanNode) -> Option<&str> {
    match node.attr(LOST) {
        Some(Value::Str(what))
            if !what.is_empty()
                && !what.contains("  ")
                && !what.contains(']')
                && !what.starts_with(' ')
                && !what.ends_with(' ')
                && !what.chars().any(char::is_control) =>
        {
            Some(what)
        }
        _ => None,
    }
}

/// Everything on a span line after the name.
pub(crate) fn span_line_rest(node: &SpanNode) -> String {
    let mut parts = Vec::new();
    if node.show_alias {
        parts.push(format!("({})", node.alias));
    }
    if node.kind != SpanKind::Internal {
        parts.push(format!("[{}]", node.kind));
    }
    parts.extend(node.status.render());
    if !node.dropped.is_zero() {
        let d = node.dropped;
        let counts: Vec<String> = [
            ("attributes", d.attributes),
            ("events", d.events),
            ("links", d.links),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(what, n)| format!("{what}={n}"))
        .collect();
        parts.push(format!("dropped({})", counts.join(",")));
    }
    let lost = lost_column(node);
    if let Some(what) = lost {
        parts.push(format!("[lost: {what}]"));
    }
    let shown = |k: &str| !(lost.is_some() && k == LOST);
    if node.attributes.iter().any(|(k, _)| shown(k)) {
        let leading = LEADING_ATTRIBUTES
            .iter()
            .flat_map(|k| node.attributes.iter().filter(move |(key, _)| key == k));
        let rest = node
            .attributes
            .iter()
            .filter(|(k, _)| !LEADING_ATTRIBUTES.contains(&k.as_str()) && shown(k));
        let ordered: Vec<(String, Value)> = leading.chain(rest).cloned().collect();
        parts.push(attributes(&ordered));
    }
    parts.join("  ")
}

/// The entry lines (resource, scope) where the span's service enters the trace, then the
/// event lines (time order), then the link lines of a span, without connectors: everything
/// a span's sort key reads besides its own line.
pub(crate) fn detail_lines(node: &SpanNode) -> Vec<String> {
    node.entry
        .iter()
        .flat_map(entry_lines)
        .chain(body_lines(node))
        .collect()
}

/// The lines drawn under a span before its children: its events (time order), then its
/// links (the resource and scope are in the legend).
pub(crate) fn body_lines(node: &SpanNode) -> Vec<String> {
    node.events
        .iter()
        .map(event_line)
        .chain(node.links.iter().map(link_line))
        .collect()
}

/// `resource key=value…` (when the resource has more than `service.name`) and
/// `scope[ name[ version]][ key=value…]`.
pub(crate) fn entry_lines(entry: &Entry) -> Vec<String> {
    let mut lines = Vec::new();
    if !entry.resource.is_empty() {
        lines.push(format!("resource {}", attributes(&entry.resource)));
    }
    let mut scope = "scope".to_owned();
    // A version without a name keeps the name's place (`scope "" 1.0`).
    let name_shown = !entry.scope.is_empty() || !entry.scope_version.is_empty();
    for (part, shown) in [
        (&entry.scope, name_shown),
        (&entry.scope_version, !entry.scope_version.is_empty()),
    ] {
        if shown {
            scope.push(' ');
            scope.push_str(&string(part));
        }
    }
    if !entry.scope_attributes.is_empty() {
        scope.push(' ');
        scope.push_str(&attributes(&entry.scope_attributes));
    }
    if scope != "scope" {
        lines.push(scope);
    }
    lines
}

/// `event[ LEVEL][ message][ key=value…]`.
pub(crate) fn event_line(event: &Event) -> String {
    let mut line = "event".to_owned();
    if let Some(level) = &event.level {
        line.push(' ');
        line.push_str(level);
    }
    if !event.message.is_empty() {
        line.push(' ');
        line.push_str(&string(&event.message));
    }
    if !event.attributes.is_empty() {
        line.push(' ');
        line.push_str(&attributes(&event.attributes));
    }
    if event.dropped_attributes > 0 {
        line.push_str(&format!(
            " dropped(attributes={})",
            event.dropped_attributes
        ));
    }
    line
}

/// `link →target[ key=value…]` or `link [external][ key=value…]`.
pub(crate) fn link_line(link: &Link) -> String {
    let mut line = format!("link {}", link.target.as_deref().unwrap_or("[external]"));
    if !link.attributes.is_empty() {
        line.push(' ');
        line.push_str(&attributes(&link.attributes));
    }
    line
}

fn attributes(attrs: &[(String, Value)]) -> String {
    attrs
        .iter()
        .map(|(k, v)| format!("{k}={}", value(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A value as the tree shows it: strings bare unless they need quotes, numbers and bools bare,
/// doubles always with a fraction or exponent (`3.0`), arrays `[a,b]`, maps `{k=v,k2=v2}`,
/// bytes `0x…`, an empty value `(empty)`.
pub(crate) fn value(v: &Value) -> String {
    match v {
        Value::Str(s) => string(s),
        Value::Int(i) => i.to_string(),
        Value::Double(d) => format!("{d:?}"),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(nested).collect::<Vec<_>>().join(",")
        ),
        Value::Map(entries) => {
            format!(
                "{{{}}}",
                entries
                    .iter()
                    .map(|(k, v)| format!("{k}={}", nested(v)))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }
        Value::Bytes(b) => format!(
            "0x{}",
            b.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
        Value::Empty => "(empty)".to_owned(),
    }
}

/// Inside arrays and maps strings are also quoted when they contain a `,`.
fn nested(v: &Value) -> String {
    match v {
        Value::Str(s) if s.contains(',') => quote(s),
        _ => value(v),
    }
}

/// A string bare, or quoted when it is empty, contains whitespace, `=`, a quote, a backslash
/// or a control character, or would read as a number or a bool.
pub(crate) fn string(s: &str) -> String {
    let needs_quotes = s.is_empty()
        || s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '=' | '"' | '\'' | '\\'))
        || s.parse::<f64>().is_ok()
        || s == "true"
        || s == "false";
    if needs_quotes { quote(s) } else { s.to_owned() }
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
