//! The text rendering of a [`SpanForest`] (the format is specified in the [`tree`](super)
//! module docs). Pure functions of the model: equal forests render byte-identically.

use std::fmt;

use super::model::{Entry, Event, Link, SpanForest, SpanKind, SpanNode, Status, StatusCode, Value};

impl SpanForest {
    /// The whole forest as text: `trace#N` headers, one line per span, event and link, traces
    /// separated by a blank line, a final newline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (n, trace) in self.traces.iter().enumerate() {
            if n > 0 {
                out.push('\n');
            }
            out.push_str(&trace.alias);
            out.push('\n');
            for root in &trace.roots {
                tree(&mut out, root, None, "", "");
            }
        }
        out
    }
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
        span_line(self, None)
    }
}

fn tree(
    out: &mut String,
    node: &SpanNode,
    parent_service: Option<&str>,
    connector: &str,
    prefix: &str,
) {
    out.push_str(connector);
    out.push_str(&span_line(node, parent_service));
    out.push('\n');
    let details = detail_lines(node);
    let total = details.len() + node.children.len();
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
        let (connector, _) = next(&mut n);
        out.push_str(&connector);
        out.push_str(&line);
        out.push('\n');
    }
    for child in &node.children {
        let (connector, child_prefix) = next(&mut n);
        tree(out, child, Some(&node.service), &connector, &child_prefix);
    }
}

/// `[service  ]name[  (span#N)][  [kind]][  status][  attrs]`; the service is shown when it
/// differs from the parent's (always on a root).
pub(crate) fn span_line(node: &SpanNode, parent_service: Option<&str>) -> String {
    let mut line = String::new();
    if parent_service != Some(node.service.as_str()) {
        line.push_str(&node.service);
        line.push_str("  ");
    }
    line.push_str(if node.name.is_empty() {
        "\"\""
    } else {
        &node.name
    });
    let rest = span_line_rest(node);
    if !rest.is_empty() {
        line.push_str("  ");
        line.push_str(&rest);
    }
    line
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
    if !node.attributes.is_empty() {
        parts.push(attributes(&node.attributes));
    }
    parts.join("  ")
}

/// The entry lines (resource, scope) where the span's service enters the trace, then the
/// event lines (time order), then the link lines of a span, without connectors.
pub(crate) fn detail_lines(node: &SpanNode) -> Vec<String> {
    node.entry
        .iter()
        .flat_map(entry_lines)
        .chain(node.events.iter().map(event_line))
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
    for part in [&entry.scope, &entry.scope_version] {
        if !part.is_empty() {
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
