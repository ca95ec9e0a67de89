//! Reading a rendered tree back into the typed model: the text [`SpanForest::render`] and
//! [`shape_census`](crate::shape_census) write — a snapshot's body — becomes a [`Rendered`]
//! holding [`SpanForest`]s again, so the book, `spantree diff` and `review` read the one
//! format through the one model instead of each splitting lines its own way.
//!
//! The contract is the round trip: `parse(s)?.render() == s` for every text the renderer
//! writes; a test runs it over every committed snapshot. Where the text cannot tell two
//! models apart the parser picks one that renders the same text: a bracketed string with no
//! comma or quote (`[run#1]`, a placeholder) is read as a string, not a one-element array; a
//! bare `0x…` as bytes; `(empty)` as the empty value; a first word `INFO`/`WARN`/… of an event
//! as its level.
//!
//! The parser is strict: a line it cannot place is an error naming the line and why, so a
//! format change that forgets the parser fails loudly.

use std::fmt;

use crate::model::{
    Dropped, Entry, Event, Link, SpanForest, SpanKind, SpanNode, Status, StatusCode, Trace, Value,
};
use crate::render::Legend;

/// What a rendered text holds: one forest, or a census of shapes (`shape#N ×COUNT` above
/// each shape's forest).
#[derive(Debug, Clone, PartialEq)]
pub enum Rendered {
    /// `trace#N` blocks.
    Forest(SpanForest),
    /// `shape#N ×COUNT` blocks, most frequent first.
    Census(Vec<Shape>),
}

/// One shape of a census: how many units of work had it, and its forest (ids numbered from 1
/// within it).
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// How often the shape occurred.
    pub count: usize,
    /// The shape's traces.
    pub forest: SpanForest,
}

impl Rendered {
    /// The text again, byte for byte what was parsed.
    #[must_use]
    pub fn render(&self) -> String {
        match self {
            Self::Forest(f) => f.render(),
            Self::Census(shapes) => render_census(shapes),
        }
    }

    /// Every trace with the header that places it: `trace#1`, or `shape#2 ×11 trace#1` in a
    /// census.
    #[must_use]
    pub fn traces(&self) -> Vec<(String, &Trace)> {
        match self {
            Self::Forest(f) => f
                .traces()
                .iter()
                .map(|t| (t.alias().to_owned(), t))
                .collect(),
            Self::Census(shapes) => shapes
                .iter()
                .enumerate()
                .flat_map(|(i, s)| {
                    s.forest
                        .traces()
                        .iter()
                        .map(move |t| (format!("shape#{} ×{} {}", i + 1, s.count, t.alias()), t))
                })
                .collect(),
        }
    }

    /// The legend the text starts with (every distinct resource and scope, with its key).
    pub(crate) fn legend(&self) -> Legend {
        match self {
            Self::Forest(f) => Legend::of([f]),
            Self::Census(shapes) => Legend::of(shapes.iter().map(|s| &s.forest)),
        }
    }

    /// Every span, in render order.
    pub fn spans(&self) -> impl Iterator<Item = &SpanNode> {
        let forests: Vec<&SpanForest> = match self {
            Self::Forest(f) => vec![f],
            Self::Census(shapes) => shapes.iter().map(|s| &s.forest).collect(),
        };
        forests.into_iter().flat_map(SpanForest::spans)
    }
}

impl fmt::Display for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// The census text of `shapes`: `shape#N ×COUNT` and the shape's forest, shapes separated by
/// a blank line.
#[must_use]
pub fn render_census(shapes: &[Shape]) -> String {
    let legend = Legend::of(shapes.iter().map(|s| &s.forest));
    let mut out = legend.render();
    for (i, shape) in shapes.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "shape#{} ×{}\n{}",
            i + 1,
            shape.count,
            shape.forest.render_traces(&legend)
        ));
    }
    out
}

/// A line the parser could not place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number in the parsed text.
    pub line: usize,
    /// The line.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.reason, self.text)
    }
}

impl std::error::Error for ParseError {}

/// Parses a rendered forest or census (a snapshot's body, without insta's header).
pub fn parse(text: &str) -> Result<Rendered, ParseError> {
    let mut p = Parser::default();
    // Wrapped lines are joined back first: a continuation is tree drawing, then one space.
    let mut logical: Vec<(usize, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match (continuation(line), logical.last_mut()) {
            (Some((separator, rest)), Some((_, previous))) => {
                previous.push_str(separator);
                previous.push_str(rest);
            }
            (Some(_), None) => {
                return Err(ParseError {
                    line: i + 1,
                    text: line.to_owned(),
                    reason: "a continuation line with no line before it".into(),
                });
            }
            (None, _) => logical.push((i + 1, line.to_owned())),
        }
    }
    for (n, line) in &logical {
        p.line(*n, line).map_err(|reason| ParseError {
            line: *n,
            text: line.clone(),
            reason,
        })?;
    }
    p.finish()
}

/// A wrapped line's continuation (tree drawing `│  `/`   `, one space, then the text; one
/// more space when the cut was at a span line's two-space column gap): the separator to join
/// it with and the text. `None` for any other line.
fn continuation(line: &str) -> Option<(&'static str, &str)> {
    let mut rest = line;
    let mut drawn = false;
    while let Some(r) = rest
        .strip_prefix("│  ")
        .or_else(|| rest.strip_prefix("   "))
    {
        rest = r;
        drawn = true;
    }
    let text = rest.strip_prefix(' ')?;
    let (separator, text) = match text.strip_prefix(' ') {
        Some(t) => ("  ", t),
        None => (" ", text),
    };
    (drawn && !text.is_empty() && !text.starts_with(' ')).then_some((separator, text))
}

/// The parser's state: the legend, the shapes (or the one forest) so far, the traces of the
/// current one, and the spans still open, one per depth.
#[derive(Default)]
struct Parser {
    /// The legend's entries (`None` before a `legend` line; open while `in_legend`).
    legend: Legend,
    in_legend: bool,
    census: Option<Vec<Shape>>,
    traces: Vec<Trace>,
    open: Vec<SpanNode>,
    seen_anything: bool,
}

impl Parser {
    fn line(&mut self, _n: usize, line: &str) -> Result<(), String> {
        if self.in_legend {
            return self.legend_line(line);
        }
        if line.is_empty() {
            return self.close_spans();
        }
        if line == "legend" {
            if self.seen_anything || !self.legend.entries.is_empty() {
                return Err("a legend after the first trace, or a second legend".into());
            }
            self.in_legend = true;
            return Ok(());
        }
        if let Some(rest) = line.strip_prefix("shape#") {
            if self.seen_anything && self.census.is_none() {
                return Err("a census shape after traces of a plain forest".into());
            }
            let count = rest
                .split_once(" ×")
                .and_then(|(_, c)| c.parse::<usize>().ok())
                .ok_or("a shape header is `shape#N ×COUNT`")?;
            self.close_forest()?;
            self.census.get_or_insert_with(Vec::new).push(Shape {
                count,
                forest: SpanForest { traces: Vec::new() },
            });
            self.seen_anything = true;
            return Ok(());
        }
        if line.starts_with("trace#") && !line.contains(' ') {
            self.close_spans()?;
            self.traces.push(Trace {
                alias: line.to_owned(),
                roots: Vec::new(),
            });
            self.seen_anything = true;
            return Ok(());
        }
        if self.traces.is_empty() {
            return Err("a line before the first `trace#N` header".into());
        }
        let (depth, content) = split_prefix(line)?;
        if depth > self.open.len() {
            return Err(format!(
                "indented {depth} levels under a span at level {}",
                self.open.len().saturating_sub(1)
            ));
        }
        while self.open.len() > depth {
            self.close_one()?;
        }
        match self.open.last_mut() {
            None => {
                let span = parse_span(content, None, &self.legend)?;
                self.open.push(span);
            }
            // `resource`/`scope` under a span is the layout before the legend; with a legend
            // such a line is a span of that name.
            Some(parent)
                if parent.children.is_empty()
                    && is_detail(content)
                    && (self.legend.entries.is_empty() || !is_entry_line(content)) =>
            {
                detail(parent, content)?;
            }
            Some(parent) => {
                let service = parent.service.clone();
                let span = parse_span(content, Some(&service), &self.legend)?;
                self.open.push(span);
            }
        }
        Ok(())
    }

    /// A line of the legend: a key, or a `resource`/`scope` line under the last key; a blank
    /// line ends the legend.
    fn legend_line(&mut self, line: &str) -> Result<(), String> {
        if line.is_empty() {
            self.in_legend = false;
            // `SERVICE#N` is a numbered key only where the service has several entries: a
            // service whose own name ends in `#N` keeps it.
            let numbered = |key: &str| -> Option<String> {
                let (service, n) = key.rsplit_once('#')?;
                n.parse::<usize>().ok()?;
                Some(service.to_owned())
            };
            let services: Vec<Option<String>> = self
                .legend
                .entries
                .iter()
                .map(|e| numbered(&e.key))
                .collect();
            for (e, service) in self.legend.entries.iter_mut().zip(&services) {
                if let Some(service) = service
                    && services.iter().flatten().filter(|s| *s == service).count() > 1
                {
                    e.service.clone_from(service);
                }
            }
            return Ok(());
        }
        let (depth, content) = split_prefix(line)?;
        if depth == 0 {
            if self.legend.entries.iter().any(|e| e.key == content) {
                return Err(format!("the legend names {content} twice"));
            }
            self.legend.entries.push(crate::render::LegendEntry {
                key: content.to_owned(),
                service: content.to_owned(),
                entry: Entry::default(),
            });
            return Ok(());
        }
        let last = self
            .legend
            .entries
            .last_mut()
            .ok_or("a legend line before its key")?;
        if depth > 1 || !(content.starts_with("resource ") || content.starts_with("scope")) {
            return Err("a legend holds keys and their `resource` and `scope` lines".into());
        }
        let mut holder = SpanNode::empty(&last.service);
        holder.entry = Some(std::mem::take(&mut last.entry));
        detail(&mut holder, content)?;
        last.entry = holder.entry.unwrap_or_default();
        Ok(())
    }

    /// Closes the innermost open span into its parent (or its trace).
    fn close_one(&mut self) -> Result<(), String> {
        let span = self.open.pop().ok_or("no open span")?;
        match self.open.last_mut() {
            Some(parent) => parent.children.push(span),
            None => self
                .traces
                .last_mut()
                .ok_or("a span outside a trace")?
                .roots
                .push(span),
        }
        Ok(())
    }

    fn close_spans(&mut self) -> Result<(), String> {
        while !self.open.is_empty() {
            self.close_one()?;
        }
        Ok(())
    }

    /// Ends the current forest: numbers its spans and hands it to the current shape.
    fn close_forest(&mut self) -> Result<(), String> {
        self.close_spans()?;
        let mut forest = SpanForest {
            traces: std::mem::take(&mut self.traces),
        };
        number_spans(&mut forest)?;
        if let Some(shapes) = &mut self.census {
            match shapes.last_mut() {
                Some(shape) => shape.forest = forest,
                None if forest.traces.is_empty() => {}
                None => return Err("traces before the first shape".into()),
            }
        } else {
            self.traces = forest.traces;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Rendered, ParseError> {
        let at_end = |reason: String| ParseError {
            line: 0,
            text: String::new(),
            reason,
        };
        if self.census.is_some() {
            self.close_forest().map_err(at_end)?;
            return Ok(Rendered::Census(self.census.unwrap_or_default()));
        }
        self.close_forest().map_err(at_end)?;
        Ok(Rendered::Forest(SpanForest {
            traces: self.traces,
        }))
    }
}

/// Gives every span its alias (`span#N`, depth first over the forest), checking the ones
/// the text shows.
fn number_spans(forest: &mut SpanForest) -> Result<(), String> {
    fn visit(node: &mut SpanNode, n: &mut usize) -> Result<(), String> {
        *n += 1;
        let alias = format!("span#{n}");
        if node.show_alias && node.alias != alias {
            return Err(format!(
                "span {} shows the alias {} but is {alias} in render order",
                node.name, node.alias
            ));
        }
        node.alias = alias;
        node.children.iter_mut().try_for_each(|c| visit(c, n))
    }
    let mut n = 0;
    for trace in &mut forest.traces {
        for root in &mut trace.roots {
            visit(root, &mut n)?;
        }
    }
    Ok(())
}

/// Splits the drawing (`├─ `, `└─ `, `│  `, `   `: three columns a level) off a line.
fn split_prefix(line: &str) -> Result<(usize, &str), String> {
    let mut rest = line;
    let mut depth = 0;
    loop {
        if let Some(r) = rest
            .strip_prefix("├─ ")
            .or_else(|| rest.strip_prefix("└─ "))
        {
            return Ok((depth + 1, r));
        }
        match rest
            .strip_prefix("│  ")
            .or_else(|| rest.strip_prefix("   "))
        {
            Some(r) => {
                rest = r;
                depth += 1;
            }
            None if depth == 0 => return Ok((0, rest)),
            None => return Err("tree drawing that does not end in a connector".into()),
        }
    }
}

/// Whether a line under a span (before its children) is one of its detail lines.
fn is_detail(content: &str) -> bool {
    ["resource ", "scope", "event", "link "]
        .iter()
        .any(|w| content == w.trim_end() || content.starts_with(&format!("{} ", w.trim_end())))
}

/// Whether a detail line is a `resource` or `scope` line (the legend's, or the old layout's).
fn is_entry_line(content: &str) -> bool {
    content == "scope" || content.starts_with("scope ") || content.starts_with("resource ")
}

/// Adds a `resource`, `scope`, `event` or `link` line to `span`.
fn detail(span: &mut SpanNode, content: &str) -> Result<(), String> {
    let (word, rest) = content.split_once(' ').unwrap_or((content, ""));
    let tokens = split_outside_quotes(rest, " ")?;
    match word {
        "resource" => {
            let entry = span.entry.get_or_insert_with(Entry::default);
            entry.resource = tokens
                .iter()
                .map(|t| attribute(t))
                .collect::<Result<_, _>>()?;
        }
        "scope" => {
            let entry = span.entry.get_or_insert_with(Entry::default);
            let mut words = Vec::new();
            for t in &tokens {
                if is_attribute(t) {
                    entry.scope_attributes.push(attribute(t)?);
                } else if entry.scope_attributes.is_empty() {
                    words.push(unquote(t)?);
                } else {
                    return Err(format!("a scope word after its attributes: {t}"));
                }
            }
            let mut words = words.into_iter();
            entry.scope = words.next().unwrap_or_default();
            entry.scope_version = words.next().unwrap_or_default();
            if let Some(extra) = words.next() {
                return Err(format!("a scope has a name and a version, not {extra}"));
            }
        }
        "event" => span.events.push(parse_event(&tokens)?),
        "link" => {
            let (target, attributes) = split_words_and_attributes(&tokens)?;
            let target = target.join(" ");
            span.links.push(Link {
                target: (target != "[external]").then_some(target),
                attributes,
            });
        }
        _ => return Err(format!("not a detail line: {word}")),
    }
    Ok(())
}

const LEVELS: [&str; 5] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];

/// `[LEVEL] [message] [key=value…] [dropped(attributes=N)]`, as tokens.
fn parse_event(tokens: &[String]) -> Result<Event, String> {
    let mut tokens = tokens.to_vec();
    let mut dropped_attributes = 0;
    if let Some(last) = tokens.last()
        && let Some(n) = last
            .strip_prefix("dropped(attributes=")
            .and_then(|r| r.strip_suffix(')'))
    {
        dropped_attributes = n.parse().map_err(|_| format!("a bad count in {last}"))?;
        tokens.pop();
    }
    let mut rest = tokens.as_slice();
    let level = match rest.first() {
        Some(l) if LEVELS.contains(&l.as_str()) => {
            rest = &rest[1..];
            Some(l.clone())
        }
        _ => None,
    };
    let (words, attributes) = split_words_and_attributes(rest)?;
    let message = match words.as_slice() {
        [] => String::new(),
        [m] => unquote(m)?,
        more => return Err(format!("an event has one message, not {more:?}")),
    };
    Ok(Event {
        level,
        message,
        attributes,
        dropped_attributes,
    })
}

/// Attributes in their rendered order.
type Attributes = Vec<(String, Value)>;

/// Leading tokens that are not attributes, then the attributes (every one after the first).
fn split_words_and_attributes(tokens: &[String]) -> Result<(Vec<String>, Attributes), String> {
    let first = tokens
        .iter()
        .position(|t| is_attribute(t))
        .unwrap_or(tokens.len());
    let attributes = tokens[first..]
        .iter()
        .map(|t| attribute(t))
        .collect::<Result<_, _>>()?;
    Ok((tokens[..first].to_vec(), attributes))
}

impl SpanNode {
    /// A span of `service` with nothing else set (the parser fills it in).
    fn empty(service: &str) -> Self {
        Self {
            alias: String::new(),
            show_alias: false,
            service: service.to_owned(),
            name: String::new(),
            kind: SpanKind::Internal,
            status: Status {
                code: StatusCode::Unset,
                message: String::new(),
            },
            attributes: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            entry: None,
            dropped: Dropped::default(),
            children: Vec::new(),
        }
    }
}

/// `[service  ]name[  (span#N)][  [kind]][  status][  dropped(…)][  attributes]`. A service
/// column that is a `legend` key gives the span that entry's resource and scope.
fn parse_span(
    content: &str,
    parent_service: Option<&str>,
    legend: &Legend,
) -> Result<SpanNode, String> {
    let columns = split_outside_quotes(content, "  ")?;
    let mut columns = columns.iter().map(String::as_str);
    let first = columns.next().ok_or("an empty span line")?;
    let mut rest: Vec<&str> = columns.collect();
    let (service, name) = match parent_service {
        None => {
            if rest.is_empty() {
                return Err("a root span line names its service and the span".into());
            }
            (Some(first), rest.remove(0))
        }
        Some(_) => match rest.first() {
            Some(col) if is_name_column(col) => (Some(first), rest.remove(0)),
            _ => (None, first),
        },
    };
    let keyed = service.and_then(|s| legend.entries.iter().find(|e| e.key == s));
    let mut span = SpanNode::empty(match (keyed, service, parent_service) {
        (Some(e), _, _) => &e.service,
        (None, Some(s), _) | (None, None, Some(s)) => s,
        (None, None, None) => unreachable!("a root always names its service"),
    });
    // A service column names where a service enters: its legend entry, or one with nothing
    // to list.
    span.entry = match (keyed, service) {
        (Some(e), _) => Some(e.entry.clone()),
        (None, Some(_)) => Some(Entry::default()),
        (None, None) => None,
    };
    span.name = if name.starts_with('"') {
        unquote(name)?
    } else {
        name.to_owned()
    };
    for col in rest {
        if let Some(alias) = col.strip_prefix('(').and_then(|c| c.strip_suffix(')')) {
            span.alias = alias.to_owned();
            span.show_alias = true;
        } else if let Some(kind) = kind_column(col) {
            span.kind = kind;
        } else if col == "OK" {
            span.status.code = StatusCode::Ok;
        } else if let Some(message) = col.strip_prefix("!ERROR") {
            span.status.code = StatusCode::Error;
            span.status.message = match message.strip_prefix(' ') {
                Some(m) => unquote(m)?,
                None if message.is_empty() => String::new(),
                None => return Err(format!("a bad status column: {col}")),
            };
        } else if let Some(counts) = col
            .strip_prefix("dropped(")
            .and_then(|c| c.strip_suffix(')'))
        {
            span.dropped = parse_dropped(counts)?;
        } else if let Some(what) = lost_tag(col) {
            span.attributes
                .push((crate::render::LOST.to_owned(), Value::Str(what.to_owned())));
            span.attributes.sort_by(|a, b| a.0.cmp(&b.0));
        } else if is_attribute(col.split(' ').next().unwrap_or("")) {
            let parsed: Vec<(String, Value)> = split_outside_quotes(col, " ")?
                .iter()
                .map(|t| attribute(t))
                .collect::<Result<_, _>>()?;
            span.attributes.extend(parsed);
            // The model keeps them sorted by key; the line leads with the ones that matter.
            span.attributes.sort_by(|a, b| a.0.cmp(&b.0));
        } else {
            return Err(format!("a column that is no part of a span line: {col}"));
        }
    }
    Ok(span)
}

/// Whether a column after the first can only be a span name (so the first was a service).
pub(crate) fn is_name_column(col: &str) -> bool {
    !(col.starts_with("(span#")
        || kind_column(col).is_some()
        || col == "OK"
        || col.starts_with("!ERROR")
        || col.starts_with("dropped(")
        || lost_tag(col).is_some()
        || is_attribute(col.split(' ').next().unwrap_or("")))
}

/// `what` of a `[lost: what]` column.
fn lost_tag(col: &str) -> Option<&str> {
    col.strip_prefix("[lost: ")?
        .strip_suffix(']')
        .filter(|w| !w.is_empty())
}

fn kind_column(col: &str) -> Option<SpanKind> {
    match col {
        "[server]" => Some(SpanKind::Server),
        "[client]" => Some(SpanKind::Client),
        "[producer]" => Some(SpanKind::Producer),
        "[consumer]" => Some(SpanKind::Consumer),
        "[internal]" => Some(SpanKind::Internal),
        _ => None,
    }
}

fn parse_dropped(counts: &str) -> Result<Dropped, String> {
    let mut dropped = Dropped::default();
    for part in counts.split(',') {
        let (what, n) = part
            .split_once('=')
            .ok_or_else(|| format!("a bad dropped count: {part}"))?;
        let n: u32 = n
            .parse()
            .map_err(|_| format!("a bad dropped count: {part}"))?;
        match what {
            "attributes" => dropped.attributes = n,
            "events" => dropped.events = n,
            "links" => dropped.links = n,
            _ => return Err(format!("nothing called {what} is dropped")),
        }
    }
    Ok(dropped)
}

/// A bare `key=value` token (a quoted string never is one: a string holding `=` is quoted).
fn is_attribute(token: &str) -> bool {
    !token.starts_with('"')
        && token
            .split_once('=')
            .is_some_and(|(k, _)| !k.is_empty() && !k.contains(['(', '[', '{']))
}

fn attribute(token: &str) -> Result<(String, Value), String> {
    let (k, v) = token
        .split_once('=')
        .ok_or_else(|| format!("not key=value: {token}"))?;
    Ok((k.to_owned(), value(v)?))
}

/// A value as [`crate::render`] writes it.
pub(crate) fn value(text: &str) -> Result<Value, String> {
    if text.starts_with('"') {
        return unquote(text).map(Value::Str);
    }
    if text == "true" || text == "false" {
        return Ok(Value::Bool(text == "true"));
    }
    if let Ok(i) = text.parse::<i64>() {
        return Ok(Value::Int(i));
    }
    if let Ok(d) = text.parse::<f64>() {
        return Ok(Value::Double(d));
    }
    if text == "(empty)" {
        return Ok(Value::Empty);
    }
    if let Some(hex) = text.strip_prefix("0x")
        && hex.len() % 2 == 0
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        return Ok(Value::Bytes(bytes));
    }
    if let Some(inner) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}'))
        && (inner.is_empty() || inner.contains('='))
    {
        let entries = split_nested(inner)?
            .iter()
            .map(|e| attribute(e))
            .collect::<Result<_, _>>()?;
        return Ok(Value::Map(entries));
    }
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']'))
        && (inner.is_empty() || inner.contains([',', '"', '[', '{']))
    {
        let items = split_nested(inner)?
            .iter()
            .map(|i| value(i))
            .collect::<Result<_, _>>()?;
        return Ok(Value::Array(items));
    }
    Ok(Value::Str(text.to_owned()))
}

/// Splits the inside of an array or map on the commas at its own level.
fn split_nested(inner: &str) -> Result<Vec<String>, String> {
    if inner.is_empty() {
        return Ok(Vec::new());
    }
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut depth = 0_usize;
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                current.push(c);
                quoted_rest(&mut chars, &mut current)?;
            }
            '[' | '{' => {
                depth += 1;
                current.push(c);
            }
            ']' | '}' => {
                depth = depth.checked_sub(1).ok_or("unbalanced brackets")?;
                current.push(c);
            }
            ',' if depth == 0 => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    parts.push(current);
    Ok(parts)
}

/// Copies the rest of a quoted string (after its opening quote) into `out`, escapes and all.
fn quoted_rest(chars: &mut std::str::Chars<'_>, out: &mut String) -> Result<(), String> {
    while let Some(c) = chars.next() {
        out.push(c);
        match c {
            '\\' => out.push(chars.next().ok_or("a quoted string ends in a backslash")?),
            '"' => return Ok(()),
            _ => {}
        }
    }
    Err("a quoted string without its closing quote".into())
}

/// Splits `text` on `sep` outside quoted strings.
fn split_outside_quotes(text: &str, sep: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix(sep) {
            parts.push(std::mem::take(&mut current));
            rest = r;
            continue;
        }
        let mut chars = rest.chars();
        let c = chars.next().unwrap_or_default();
        current.push(c);
        if c == '"' {
            quoted_rest(&mut chars, &mut current)?;
        }
        rest = chars.as_str();
    }
    if !current.is_empty() || !parts.is_empty() {
        parts.push(current);
    }
    Ok(parts.into_iter().filter(|p| !p.is_empty()).collect())
}

/// A string as the renderer writes it: bare, or quoted with `\"`, `\\`, `\n`, `\r`, `\t`,
/// `\u{…}` escapes.
pub fn unquote(text: &str) -> Result<String, String> {
    let Some(inner) = text.strip_prefix('"') else {
        return Ok(text.to_owned());
    };
    let inner = inner
        .strip_suffix('"')
        .ok_or_else(|| format!("a quoted string without its closing quote: {text}"))?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let code: String = chars.by_ref().take_while(|&c| c != '}').collect();
                let code = code
                    .strip_prefix('{')
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("a bad \\u escape in {text}"))?;
                out.push(code);
            }
            other => return Err(format!("an unknown escape \\{other:?} in {text}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every part of the format, as the renderer writes it (legend, wrapping, leading
    /// attributes).
    const TREE: &str = "legend
metis-api
├─ resource service.instance.id=[metis-api#1] service.version=0.1.0
└─ scope metis-api \"1 0\" k=v

trace#1
metis-api  POST /runs  [server]  http.response.status_code=200 list=[1,2] tags={a=1,b=\"x,y\"}
└─ create_run  (span#2)  note=\"a  b\" run_id=[run#1]
   ├─ event INFO \"Run created\" run_id=[run#1]
   ├─ event WARN
   ├─ event \"no level\" dropped(attributes=2)
   ├─ link →POST /runs k=1.5
   ├─ link [external]
   └─ metis-engine-generic  workflow_run  [consumer]  !ERROR \"exit  3\"  dropped(attributes=1,events=2)
      │    state=\"a long state that needs quotes\" b=true e=(empty) f=3.0 raw=0x0aff
      │   ref=→create_run(span#2)
      ├─ event INFO phase state=initializing
      └─ \"\"  OK

trace#2
[unknown]  [missing parent]
└─ child
";

    /// The layout before the legend (resource and scope lines under the span, one long
    /// line, attributes in key order) still reads, into the same model.
    const OLD_LAYOUT: &str = "trace#1
metis-api  POST /runs  [server]  http.response.status_code=200 tags={a=1,b=\"x,y\"} list=[1,2]
├─ resource service.instance.id=[metis-api#1] service.version=0.1.0
├─ scope metis-api \"1 0\" k=v
└─ create_run  (span#2)  run_id=[run#1] note=\"a  b\"
   ├─ event INFO \"Run created\" run_id=[run#1]
   ├─ event WARN
   ├─ event \"no level\" dropped(attributes=2)
   ├─ link →POST /runs k=1.5
   ├─ link [external]
   └─ metis-engine-generic  workflow_run  [consumer]  !ERROR \"exit  3\"  dropped(attributes=1,events=2)  ref=→create_run(span#2) f=3.0 b=true state=\"a long state that needs quotes\" e=(empty) raw=0x0aff
      ├─ event INFO phase state=initializing
      └─ \"\"  OK

trace#2
[unknown]  [missing parent]
└─ child
";

    #[test]
    fn every_part_of_the_format_round_trips() {
        let parsed = parse(TREE).unwrap();
        assert_eq!(parsed.render(), TREE);
        assert_eq!(parse(OLD_LAYOUT).unwrap(), parsed);
        // Only a line with no attribute to cut before runs past the width.
        let long: Vec<&str> = TREE
            .lines()
            .filter(|l| l.chars().count() > crate::render::WIDTH)
            .collect();
        assert_eq!(long.len(), 1, "{long:?}");
        assert!(
            long[0].ends_with("dropped(attributes=1,events=2)"),
            "{long:?}"
        );
        let Rendered::Forest(forest) = &parsed else {
            panic!("{parsed:?}")
        };
        let run = forest.spans_named("workflow_run").next().unwrap();
        assert_eq!(run.service(), "metis-engine-generic");
        assert_eq!(run.kind(), SpanKind::Consumer);
        assert_eq!(run.status().message, "exit  3");
        assert_eq!(run.attr("f"), Some(&Value::Double(3.0)));
        assert_eq!(run.attr("raw"), Some(&Value::Bytes(vec![10, 255])));
        assert_eq!(run.alias(), "span#3");
        assert_eq!(run.children()[0].service(), "metis-engine-generic");
        let create = forest.span("span#2").unwrap();
        assert_eq!(create.attr("note"), Some(&Value::from("a  b")));
        assert_eq!(create.links()[0].target.as_deref(), Some("→POST /runs"));
        assert_eq!(create.links()[1].target, None);
        assert_eq!(create.events()[2].dropped_attributes, 2);
        let root = &forest.traces()[0].roots()[0];
        assert_eq!(
            root.attr("tags"),
            Some(&Value::Map(vec![
                ("a".into(), Value::Int(1)),
                ("b".into(), Value::from("x,y"))
            ]))
        );
        let entry = root.entry().unwrap();
        assert_eq!(
            (entry.scope.as_str(), entry.scope_version.as_str()),
            ("metis-api", "1 0")
        );
        assert_eq!(forest.traces()[1].roots()[0].service(), "[unknown]");
    }

    /// Legend corner cases a review found: a service whose own name ends in `#N`, a span
    /// named `scope`, a resource holding a NaN (equal to itself only as text).
    #[test]
    fn legend_corner_cases_round_trip() {
        for text in [
            "legend\nshop#1\n└─ scope s\na#1\n└─ scope x\na#2\n└─ scope y\n\ntrace#1\nshop#1  root\n├─ a#1  c1\n└─ a#2  c2\n",
            "legend\nsvc\n└─ scope s\n\ntrace#1\nsvc  root\n└─ scope\n",
            "legend\nsvc\n└─ resource x=NaN\n\ntrace#1\nsvc  a\n\ntrace#2\nsvc  b\n",
            "legend\nsvc\n└─ scope s\n\ntrace#1\nsvc  a  error=x state=A state=B\n",
            // Names that would read as another column, or hold a gap, are quoted.
            "legend\nsvc\n└─ scope s\nother\n└─ scope \"\" \"1.0\"\n\ntrace#1\nsvc  root\n├─ other  \"run=1\"\n├─ other  \"OK\"  [client]\n└─ \"a  b\"\n",
        ] {
            let parsed = parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(parsed.render(), text);
        }
        let Rendered::Forest(f) = parse(
            "legend\nshop#1\n└─ scope s\na#1\n└─ scope x\na#2\n└─ scope y\n\ntrace#1\nshop#1  root\n├─ a#1  c1\n└─ a#2  c2\n",
        )
        .unwrap() else {
            panic!("a forest")
        };
        let services: Vec<&str> = f.spans().map(SpanNode::service).collect();
        assert_eq!(services, ["shop#1", "a", "a"]);
    }

    /// A span standing in for a lost one shows `[lost: …]` after its status and reads back as
    /// its `lost` attribute; a value the column could not read back stays an attribute.
    #[test]
    fn a_lost_column_round_trips() {
        let text = "legend\nsvc\n└─ scope s\nh\n└─ scope h\n\ntrace#1\nsvc  publish  [producer]\n└─ h  kill engine  [lost: engine killed]  fault.target=engine-1\n";
        let parsed = parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.render(), text);
        let Rendered::Forest(f) = parsed else {
            panic!("a forest")
        };
        let kill = f.spans_named("kill engine").next().unwrap();
        assert_eq!(
            kill.attr("lost"),
            Some(&crate::Value::Str("engine killed".to_owned()))
        );
        for odd in ["a]b", "\"\"", "\" x\""] {
            let text =
                format!("legend\nsvc\n└─ scope s\n\ntrace#1\nsvc  a  fault.target=x lost={odd}\n");
            let parsed = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(parsed.render(), text, "{odd} stays an attribute");
        }
    }

    /// A string too long for any line is cut between its words, and read back whole.
    #[test]
    fn a_long_string_wraps_between_its_words_and_reads_back() {
        let long = "word ".repeat(60).trim_end().to_owned();
        let text = format!(
            "legend\nsvc\n└─ scope s\n\ntrace#1\nsvc  root\n└─ child  error=\"{long}\" next=1\n"
        );
        let Rendered::Forest(forest) = parse(&text).unwrap() else {
            panic!("a forest")
        };
        let rendered = forest.render();
        assert!(
            rendered.lines().all(|l| l.chars().count() <= 100),
            "{rendered}"
        );
        assert!(rendered.lines().count() > 8, "{rendered}");
        let again = parse(&rendered).unwrap().render();
        assert_eq!(again, rendered);
        let child = forest.spans_named("child").next().unwrap();
        assert_eq!(child.attr("error"), Some(&crate::Value::Str(long)));
    }

    #[test]
    fn a_census_round_trips_and_labels_each_trace_with_its_shape() {
        let text = "shape#1 ×3\ntrace#1\nmetis-api  a\n\nshape#2 ×1\ntrace#1\nmetis-api  b\n\ntrace#2\nmetis-api  c\n";
        let parsed = parse(text).unwrap();
        assert_eq!(parsed.render(), text);
        let headers: Vec<String> = parsed.traces().into_iter().map(|(h, _)| h).collect();
        assert_eq!(
            headers,
            [
                "shape#1 ×3 trace#1",
                "shape#2 ×1 trace#1",
                "shape#2 ×1 trace#2"
            ]
        );
    }

    #[test]
    fn a_line_that_cannot_be_placed_is_an_error_naming_it() {
        let err = parse("trace#1\nmetis-api  a\n      └─ too deep\n").unwrap_err();
        assert_eq!(err.line, 3, "{err}");
        let err = parse("metis-api  a\n").unwrap_err();
        assert!(err.reason.contains("trace#N"), "{err}");
        let err = parse("trace#1\nmetis-api  a  b=\"open\n").unwrap_err();
        assert!(err.reason.contains("closing quote"), "{err}");
    }
}
