//! Expectations for what a snapshot says poorly — a span that must not exist, a count, a
//! parent, an order of events — in the style of `tracing-mock`:
//!
//! ```
//! use spantree::expect;
//!
//! let completed = expect::span()
//!     .named("workflow_run")
//!     .in_service("metis-engine-generic")
//!     .with_attr("state", "COMPLETE")
//!     .child_of(expect::span().named("publish metis.runs.generic.1.SH.1"))
//!     .with_events_in_order(["initializing", "running", "cleanup"])
//!     .once();
//! let no_engine_span = expect::no_span().named("workflow_run");
//! # let _ = (completed, no_engine_span);
//! ```
//!
//! An expectation is checked against a normalised [`SpanForest`], so values are the redacted
//! ones (`with_attr("run_id", "[run#1]")`, `with_attr("duration_ms", "[duration:int]")`) and typed
//! (`with_attr("http.response.status_code", 200)` does not match the string `"200"`).
//! [`ExpectedSpan::check`] fails with an [`ExpectationError`] that names the expectation, says
//! what was found (the closest candidates and why each does not match) and shows the rendered
//! tree.

use std::fmt;

use super::model::{Event, SpanForest, SpanKind, SpanNode, StatusCode, Value};
use super::render;

/// A span matching every given criterion, by default at least once.
pub fn span() -> ExpectedSpan {
    ExpectedSpan::default()
}

/// No span may match the given criteria (`span().times(0)`).
pub fn no_span() -> ExpectedSpan {
    span().times(0)
}

/// An event matching every given criterion (for [`ExpectedSpan::with_event`] and
/// [`ExpectedSpan::with_events_in_order`]).
pub fn event() -> ExpectedEvent {
    ExpectedEvent::default()
}

/// How many spans must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Count {
    #[default]
    AtLeastOnce,
    Exactly(usize),
}

/// An expected span: built with [`span`] or [`no_span`], checked with [`ExpectedSpan::check`].
#[derive(Debug, Clone, Default)]
#[must_use = "an expectation does nothing until it is checked"]
pub struct ExpectedSpan {
    name: Option<String>,
    service: Option<String>,
    kind: Option<SpanKind>,
    status: Option<(StatusCode, Option<String>)>,
    attrs: Vec<(String, Option<Value>)>,
    parent: Option<Box<ExpectedSpan>>,
    ancestor: Option<Box<ExpectedSpan>>,
    events: Vec<ExpectedEvent>,
    events_in_order: Option<Vec<ExpectedEvent>>,
    count: Count,
}

impl ExpectedSpan {
    /// The span name (after redaction) is exactly `name`.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The span's resource `service.name` is `service`.
    pub fn in_service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }

    /// The span kind is `kind`.
    pub fn with_kind(mut self, kind: SpanKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// The status code is `code` (any message).
    pub fn with_status(mut self, code: StatusCode) -> Self {
        self.status = Some((code, None));
        self
    }

    /// The status is `ERROR` with exactly this (redacted) message.
    pub fn with_error(mut self, message: impl Into<String>) -> Self {
        self.status = Some((StatusCode::Error, Some(message.into())));
        self
    }

    /// The attribute `key` is present with exactly this typed, redacted value.
    pub fn with_attr(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.attrs.push((key.into(), Some(value.into())));
        self
    }

    /// The attribute `key` is absent.
    pub fn without_attr(mut self, key: impl Into<String>) -> Self {
        self.attrs.push((key.into(), None));
        self
    }

    /// The span's parent matches `parent` (its count is ignored).
    pub fn child_of(mut self, parent: ExpectedSpan) -> Self {
        self.parent = Some(Box::new(parent));
        self
    }

    /// Some ancestor of the span matches `ancestor` (its count is ignored).
    pub fn descendant_of(mut self, ancestor: ExpectedSpan) -> Self {
        self.ancestor = Some(Box::new(ancestor));
        self
    }

    /// The span has an event matching `event`.
    pub fn with_event(mut self, event: impl Into<ExpectedEvent>) -> Self {
        self.events.push(event.into());
        self
    }

    /// The span has events matching these, in this order (other events may come between).
    /// A bare string matches an event whose message or any attribute value is that string, so
    /// `["initializing", "running"]` checks the `phase` events.
    pub fn with_events_in_order<E: Into<ExpectedEvent>>(
        mut self,
        events: impl IntoIterator<Item = E>,
    ) -> Self {
        self.events_in_order = Some(events.into_iter().map(Into::into).collect());
        self
    }

    /// Exactly `n` spans match (`0`: none may).
    pub fn times(mut self, n: usize) -> Self {
        self.count = Count::Exactly(n);
        self
    }

    /// Exactly one span matches.
    pub fn once(self) -> Self {
        self.times(1)
    }

    /// Every span of `forest` that matches (the count is not checked), in render order.
    pub fn find<'f>(&self, forest: &'f SpanForest) -> Vec<&'f SpanNode> {
        forest
            .spans()
            .filter(|s| self.mismatch(forest, s).is_none())
            .collect()
    }

    /// Checks the expectation, count included.
    ///
    /// # Errors
    ///
    /// When too few or too many spans match: the error describes the expectation, the matching
    /// spans or the closest candidates with the reason each fails, and the rendered tree.
    pub fn check(&self, forest: &SpanForest) -> Result<(), ExpectationError> {
        let found = self.find(forest);
        let problem = match self.count {
            Count::AtLeastOnce if found.is_empty() => {
                Some(format!("no span matches{}", self.candidates(forest)))
            }
            Count::Exactly(n) if found.len() != n => Some(format!(
                "expected {n} matching span(s), found {}{}{}",
                found.len(),
                found
                    .iter()
                    .map(|s| format!("\n  - {}: {}", s.alias(), s.render_line()))
                    .collect::<String>(),
                if found.is_empty() {
                    self.candidates(forest)
                } else {
                    String::new()
                },
            )),
            _ => None,
        };
        match problem {
            None => Ok(()),
            Some(problem) => Err(ExpectationError {
                expectation: self.to_string(),
                problem,
                tree: forest.render(),
            }),
        }
    }

    /// "closest candidates": spans with the expected name (or all spans), and why each fails.
    fn candidates(&self, forest: &SpanForest) -> String {
        let named: Vec<&SpanNode> = match &self.name {
            Some(name) => forest.spans_named(name).collect(),
            None => forest.spans().collect(),
        };
        if named.is_empty() {
            return match &self.name {
                Some(name) => format!("; no span is named {name:?}"),
                None => "; the forest has no spans".to_owned(),
            };
        }
        let mut out = "; closest candidates:".to_owned();
        for s in named.iter().take(5) {
            let why = self.mismatch(forest, s).unwrap_or_default();
            out.push_str(&format!(
                "\n  - {}: {}\n    {why}",
                s.alias(),
                s.render_line()
            ));
        }
        if named.len() > 5 {
            out.push_str(&format!("\n  - … and {} more", named.len() - 5));
        }
        out
    }

    /// Why `span` does not match (the first failing criterion), or `None` when it does.
    fn mismatch(&self, forest: &SpanForest, span: &SpanNode) -> Option<String> {
        if let Some(name) = &self.name
            && span.name() != name
        {
            return Some(format!("name is {:?}, expected {name:?}", span.name()));
        }
        if let Some(service) = &self.service
            && span.service() != service
        {
            return Some(format!(
                "service is {:?}, expected {service:?}",
                span.service()
            ));
        }
        if let Some(kind) = self.kind
            && span.kind() != kind
        {
            return Some(format!("kind is {}, expected {kind}", span.kind()));
        }
        if let Some((code, message)) = &self.status {
            let status = span.status();
            if status.code != *code || message.as_ref().is_some_and(|m| *m != status.message) {
                return Some(format!(
                    "status is {:?} {:?}, expected {code:?}{}",
                    status.code,
                    status.message,
                    message
                        .as_ref()
                        .map(|m| format!(" {m:?}"))
                        .unwrap_or_default()
                ));
            }
        }
        for (key, expected) in &self.attrs {
            match (span.attr(key), expected) {
                (None, None) => {}
                (Some(actual), None) => {
                    return Some(format!("has {key}={actual}, expected no {key}"));
                }
                (None, Some(expected)) => {
                    return Some(format!("has no {key}, expected {key}={expected}"));
                }
                (Some(actual), Some(expected)) if actual != expected => {
                    return Some(format!("has {key}={actual}, expected {key}={expected}"));
                }
                (Some(_), Some(_)) => {}
            }
        }
        if let Some(parent) = &self.parent {
            match forest.parent_of(span) {
                None => return Some(format!("is a root, expected a child of {parent}")),
                Some(p) => {
                    if let Some(why) = parent.mismatch(forest, p) {
                        return Some(format!("parent {} does not match ({why})", p.alias()));
                    }
                }
            }
        }
        if let Some(ancestor) = &self.ancestor {
            let mut current = forest.parent_of(span);
            loop {
                match current {
                    None => return Some(format!("no ancestor matches {ancestor}")),
                    Some(a) if ancestor.mismatch(forest, a).is_none() => break,
                    Some(a) => current = forest.parent_of(a),
                }
            }
        }
        for expected in &self.events {
            if !span.events().iter().any(|e| expected.matches(e)) {
                return Some(format!(
                    "has no event matching {expected}; events: {}",
                    events_list(span)
                ));
            }
        }
        if let Some(order) = &self.events_in_order {
            let mut events = span.events().iter();
            for (n, expected) in order.iter().enumerate() {
                if !events.any(|e| expected.matches(e)) {
                    let matched: Vec<String> = order[..n].iter().map(ToString::to_string).collect();
                    return Some(format!(
                        "events not in the expected order: after [{}] no later event matches {expected}; events: {}",
                        matched.join(", "),
                        events_list(span)
                    ));
                }
            }
        }
        None
    }
}

fn events_list(span: &SpanNode) -> String {
    if span.events().is_empty() {
        return "none".to_owned();
    }
    span.events()
        .iter()
        .map(|e| format!("`{}`", render::event_line(e)))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for ExpectedSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.count {
            Count::AtLeastOnce => f.write_str("a span")?,
            Count::Exactly(0) => f.write_str("no span")?,
            Count::Exactly(n) => write!(f, "exactly {n} span(s)")?,
        }
        if let Some(name) = &self.name {
            write!(f, " named {name:?}")?;
        }
        if let Some(service) = &self.service {
            write!(f, " in service {service:?}")?;
        }
        if let Some(kind) = self.kind {
            write!(f, " of kind {kind}")?;
        }
        if let Some((code, message)) = &self.status {
            write!(f, " with status {code:?}")?;
            if let Some(m) = message {
                write!(f, " {m:?}")?;
            }
        }
        for (key, value) in &self.attrs {
            match value {
                Some(v) => write!(f, " with {key}={v}")?,
                None => write!(f, " without {key}")?,
            }
        }
        if let Some(parent) = &self.parent {
            write!(f, ", child of ({})", parent.criteria())?;
        }
        if let Some(ancestor) = &self.ancestor {
            write!(f, ", descendant of ({})", ancestor.criteria())?;
        }
        for e in &self.events {
            write!(f, ", with event {e}")?;
        }
        if let Some(order) = &self.events_in_order {
            let order: Vec<String> = order.iter().map(ToString::to_string).collect();
            write!(f, ", with events in order [{}]", order.join(", "))?;
        }
        Ok(())
    }
}

impl ExpectedSpan {
    /// The description without the count, for nested expectations.
    fn criteria(&self) -> String {
        let mut plain = self.clone();
        plain.count = Count::AtLeastOnce;
        plain.to_string()
    }
}

/// An expected event: built with [`event`], or from a bare string (matches an event whose
/// message or any attribute value is that string).
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ExpectedEvent {
    message: Option<String>,
    level: Option<String>,
    attrs: Vec<(String, Value)>,
    text: Option<String>,
}

impl ExpectedEvent {
    /// The (redacted) message is exactly `message` (`phase` for phase events).
    pub fn named(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// The level is `level` (`INFO`, `WARN`, ...).
    pub fn at_level(mut self, level: impl Into<String>) -> Self {
        self.level = Some(level.into());
        self
    }

    /// The field `key` has exactly this typed, redacted value.
    pub fn with_attr(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.attrs.push((key.into(), value.into()));
        self
    }

    /// Whether `event` matches every criterion.
    pub fn matches(&self, event: &Event) -> bool {
        self.message.as_ref().is_none_or(|m| *m == event.message)
            && self
                .level
                .as_ref()
                .is_none_or(|l| Some(l) == event.level.as_ref())
            && self.attrs.iter().all(|(k, v)| event.attr(k) == Some(v))
            && self.text.as_ref().is_none_or(|t| {
                *t == event.message
                    || event
                        .attributes
                        .iter()
                        .any(|(_, v)| v.as_str() == Some(t) || v.to_string() == *t)
            })
    }
}

impl From<&str> for ExpectedEvent {
    fn from(text: &str) -> Self {
        Self {
            text: Some(text.to_owned()),
            ..Self::default()
        }
    }
}

impl From<String> for ExpectedEvent {
    fn from(text: String) -> Self {
        Self {
            text: Some(text),
            ..Self::default()
        }
    }
}

impl fmt::Display for ExpectedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(level) = &self.level {
            parts.push(level.clone());
        }
        if let Some(message) = &self.message {
            parts.push(format!("{message:?}"));
        }
        for (k, v) in &self.attrs {
            parts.push(format!("{k}={v}"));
        }
        if let Some(text) = &self.text {
            parts.push(format!("{text:?}"));
        }
        if parts.is_empty() {
            f.write_str("any event")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

/// A failed expectation: what was expected, what was found, and the rendered tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expectation}\nbut {problem}\n\nspan tree:\n{tree}")]
pub struct ExpectationError {
    /// The expectation, described.
    pub expectation: String,
    /// What was found instead.
    pub problem: String,
    /// The rendered forest.
    pub tree: String,
}
