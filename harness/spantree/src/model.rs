//! The normalised span-tree model: what [`SpanForest::from_otlp`] produces and what the
//! renderer and the expectation API read.
//!
//! Everything in here is already redacted and renumbered (see the policy in
//! `normalize/mod.rs`): strings hold placeholders such as `[run#1]`, aliases such as `span#3`,
//! references such as `→create_run`. Nothing here carries a raw id, a timestamp or an
//! arrival order, so two forests built from the same structure compare equal.

use std::fmt;

/// All traces of one collection, sorted by their roots' stable key.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanForest {
    pub(crate) traces: Vec<Trace>,
}

impl SpanForest {
    /// The traces, in render order (`trace#1` first).
    pub fn traces(&self) -> &[Trace] {
        &self.traces
    }

    /// Every span of every trace in render order (depth first, parents before children).
    pub fn spans(&self) -> impl Iterator<Item = &SpanNode> {
        self.traces.iter().flat_map(Trace::spans)
    }

    /// The span with this alias (`"span#3"`), if any.
    pub fn span(&self, alias: &str) -> Option<&SpanNode> {
        self.spans().find(|s| s.alias == alias)
    }

    /// Every span with this name, in render order.
    pub fn spans_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a SpanNode> + 'a {
        self.spans().filter(move |s| s.name == name)
    }

    /// The parent of `span` (found by alias), or `None` for a root or a span not in this forest.
    pub fn parent_of(&self, span: &SpanNode) -> Option<&SpanNode> {
        self.spans()
            .find(|p| p.children.iter().any(|c| c.alias == span.alias))
    }
}

/// One trace: its alias (`trace#N`) and its root spans (normally exactly one).
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub(crate) alias: String,
    pub(crate) roots: Vec<SpanNode>,
}

impl Trace {
    /// `trace#N`, numbered in render order.
    pub fn alias(&self) -> &str {
        &self.alias
    }

    /// The root spans, sorted by their stable key.
    pub fn roots(&self) -> &[SpanNode] {
        &self.roots
    }

    /// Every span of this trace in render order.
    pub fn spans(&self) -> impl Iterator<Item = &SpanNode> {
        self.roots.iter().flat_map(SpanNode::descendants_and_self)
    }
}

/// One span with its children.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanNode {
    pub(crate) alias: String,
    pub(crate) show_alias: bool,
    pub(crate) service: String,
    pub(crate) name: String,
    pub(crate) kind: SpanKind,
    pub(crate) status: Status,
    pub(crate) attributes: Vec<(String, Value)>,
    pub(crate) events: Vec<Event>,
    pub(crate) links: Vec<Link>,
    pub(crate) entry: Option<Entry>,
    pub(crate) dropped: Dropped,
    pub(crate) children: Vec<SpanNode>,
}

impl SpanNode {
    /// `span#N`, numbered depth first in render order over the whole forest.
    pub fn alias(&self) -> &str {
        &self.alias
    }

    /// The resource's `service.name` (`unknown_service` when the resource has none).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The span name, redacted.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The span kind.
    pub fn kind(&self) -> SpanKind {
        self.kind
    }

    /// The span status.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Attributes after redaction, sorted by key; SDK noise is gone.
    pub fn attributes(&self) -> &[(String, Value)] {
        &self.attributes
    }

    /// The attribute `key`, if present.
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Events in time order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Links, sorted by their rendering.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// The resource and instrumentation scope, on a span where its service enters the trace
    /// (a root, or a span whose parent came from another resource or scope); `None` elsewhere.
    pub fn entry(&self) -> Option<&Entry> {
        self.entry.as_ref()
    }

    /// What the SDK dropped from this span (attribute, event and link limits).
    pub fn dropped(&self) -> Dropped {
        self.dropped
    }

    /// Child spans, sorted by their stable key.
    pub fn children(&self) -> &[SpanNode] {
        &self.children
    }

    /// This span and all its descendants, depth first in render order.
    pub fn descendants_and_self(&self) -> Box<dyn Iterator<Item = &SpanNode> + '_> {
        Box::new(
            std::iter::once(self).chain(
                self.children
                    .iter()
                    .flat_map(SpanNode::descendants_and_self),
            ),
        )
    }
}

/// Where a service enters a trace: its resource and the span's instrumentation scope.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Entry {
    /// The resource's attributes after redaction, sorted by key, without `service.name` (the
    /// span line shows it); `service.instance.id` reads `[instance#N]`.
    pub resource: Vec<(String, Value)>,
    /// The instrumentation scope's name (empty when the SDK sent none).
    pub scope: String,
    /// The scope's version (empty when none).
    pub scope_version: String,
    /// The scope's attributes after redaction, sorted by key.
    pub scope_attributes: Vec<(String, Value)>,
}

impl Entry {
    /// The resource attribute `key`, if present.
    pub fn resource_attr(&self, key: &str) -> Option<&Value> {
        self.resource.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// Counts the SDK dropped from a span because of its limits; all zero normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dropped {
    /// `dropped_attributes_count`.
    pub attributes: u32,
    /// `dropped_events_count`.
    pub events: u32,
    /// `dropped_links_count`.
    pub links: u32,
}

impl Dropped {
    /// Whether nothing was dropped.
    pub fn is_zero(self) -> bool {
        self == Self::default()
    }
}

/// OTLP span kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpanKind {
    /// `SPAN_KIND_INTERNAL`, and `SPAN_KIND_UNSPECIFIED` (which OTLP says to read as internal).
    Internal,
    /// `SPAN_KIND_SERVER`.
    Server,
    /// `SPAN_KIND_CLIENT`.
    Client,
    /// `SPAN_KIND_PRODUCER`.
    Producer,
    /// `SPAN_KIND_CONSUMER`.
    Consumer,
}

impl SpanKind {
    pub(crate) fn from_otlp(kind: i32) -> Self {
        match kind {
            2 => Self::Server,
            3 => Self::Client,
            4 => Self::Producer,
            5 => Self::Consumer,
            _ => Self::Internal,
        }
    }

    /// Lowercase name as rendered in brackets (`server`, `producer`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Internal => "internal",
            Self::Server => "server",
            Self::Client => "client",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
        }
    }
}

impl fmt::Display for SpanKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// OTLP span status: code plus (redacted) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The status code.
    pub code: StatusCode,
    /// The description, redacted; empty when none was set.
    pub message: String,
}

/// OTLP status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StatusCode {
    /// `STATUS_CODE_UNSET` (not rendered).
    Unset,
    /// `STATUS_CODE_OK`.
    Ok,
    /// `STATUS_CODE_ERROR`.
    Error,
}

impl StatusCode {
    pub(crate) fn from_otlp(code: i32) -> Self {
        match code {
            1 => Self::Ok,
            2 => Self::Error,
            _ => Self::Unset,
        }
    }
}

/// A typed attribute value after redaction. Placeholders (`[duration:int]`, `[run#1]`, ...) are
/// strings.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string (possibly containing placeholders).
    Str(String),
    /// A 64-bit integer.
    Int(i64),
    /// A double.
    Double(f64),
    /// A boolean.
    Bool(bool),
    /// An array of values.
    Array(Vec<Value>),
    /// A nested key/value list, in its original order.
    Map(Vec<(String, Value)>),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// An `AnyValue` without a value.
    Empty,
}

impl Value {
    /// The string, if this is a [`Value::Str`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Self::Str(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Self::Int(i)
    }
}

impl From<i32> for Value {
    fn from(i: i32) -> Self {
        Self::Int(i.into())
    }
}

impl From<u32> for Value {
    fn from(i: u32) -> Self {
        Self::Int(i.into())
    }
}

impl From<f64> for Value {
    fn from(d: f64) -> Self {
        Self::Double(d)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}

/// Renders the value the way the tree shows it (see the format in the module docs).
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::render::value(self))
    }
}

/// A span event (a `tracing` event inside a span).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The `level` attribute (`INFO`, `WARN`, ...), shown before the message.
    pub level: Option<String>,
    /// The message (OTLP event name), redacted; empty for a message-less `tracing` event.
    pub message: String,
    /// The remaining fields after redaction, sorted by key.
    pub attributes: Vec<(String, Value)>,
    /// `dropped_attributes_count` (attribute limit), normally 0.
    pub dropped_attributes: u32,
}

impl Event {
    /// The attribute `key`, if present.
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

/// A span link.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// The rendered reference to the linked span (`→create_run`, `→create_run(span#2)`), or
    /// `None` when the linked span is not in the collected data.
    pub target: Option<String>,
    /// Link attributes after redaction, sorted by key.
    pub attributes: Vec<(String, Value)>,
}

impl SpanForest {
    /// The same forest with only its structure: span names, kinds, services and links (their
    /// targets); attributes, events, statuses, resources, scopes, dropped counts and link
    /// attributes dropped. Two runs that did
    /// the same things with different data have the same shape.
    #[must_use]
    pub fn shape(&self) -> SpanForest {
        fn strip(node: &mut SpanNode) {
            node.attributes.clear();
            node.events.clear();
            node.entry = None;
            node.dropped = Dropped::default();
            node.status = Status {
                code: StatusCode::Unset,
                message: String::new(),
            };
            for link in &mut node.links {
                link.attributes.clear();
            }
            node.children.iter_mut().for_each(strip);
        }
        let mut shape = self.clone();
        for trace in &mut shape.traces {
            trace.roots.iter_mut().for_each(strip);
        }
        shape
    }
}
