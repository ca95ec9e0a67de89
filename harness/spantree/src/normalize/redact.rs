//! The redaction policy: every rule of the module docs of [`super`], applied by one
//! [`Redactor`] to names, messages, attribute values, resources and scopes.

use super::*;

// ---------------------------------------------------------------------------------------------
// Redaction

/// Marks a numbered or resolved token inside a redacted string: `MARK_START index MARK_END`,
/// `index` into [`Redactor::tokens`]. Private-use characters never occur in real data and no
/// pattern below matches them (the path pattern includes them in a component on purpose).
pub(super) const MARK_START: char = '\u{E000}';
pub(super) const MARK_END: char = '\u{E001}';

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Token {
    /// A UUID of the id family with this index ([`Options::id_family`]).
    Family(usize, String),
    Uuid(String),
    /// Index into the raw spans.
    SpanRef(usize),
    /// Trace id (hex).
    TraceRef(String),
    /// A `service.instance.id` (lowercase).
    Instance(String),
}

/// Turns raw strings into strings with placeholders and token marks.
pub(super) struct Redactor<'a> {
    pub(super) raws: &'a [Raw<'a>],
    pub(super) literals: Vec<(&'a str, &'a str)>,
    pub(super) span_index: HashMap<&'a str, usize>,
    pub(super) traces: HashSet<&'a str>,
    /// UUID (lowercase) → the index of its id family.
    pub(super) family_ids: HashMap<String, usize>,
    /// The id families' placeholder names, by index.
    pub(super) family_names: Vec<String>,
    /// Every resource's `service.instance.id` (lowercase) → its service and whether that
    /// service's instances are unordered ([`Options::unordered_instances`]).
    pub(super) instances: HashMap<String, (String, bool)>,
    pub(super) tokens: Vec<Token>,
    pub(super) token_index: HashMap<Token, usize>,
    pub(super) unresolved: Vec<String>,
    /// [`Options::draw_orphans`]: a reference to a span that never arrived reads `→[missing]`.
    pub(super) partial: bool,
    /// Redacted (marked) span names by raw index, once every node is built.
    pub(super) names: Vec<String>,
}

impl<'a> Redactor<'a> {
    pub(super) fn new(raws: &'a [Raw<'a>], options: &'a Options) -> Self {
        let mut literals: Vec<(&str, &str)> = options
            .redactions
            .iter()
            .filter(|r| !r.literal.is_empty())
            .map(|r| (r.literal.as_str(), r.placeholder.as_str()))
            .collect();
        literals.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(b.0)));
        let mut family_ids = HashMap::new();
        let mut note_family_ids = |attrs: &[KeyValue]| {
            for kv in attrs {
                if let Some(family) = family_of(&kv.key, &options.id_families)
                    && let Some(any_value::Value::StringValue(s)) =
                        kv.value.as_ref().and_then(|v| v.value.as_ref())
                    && UUID_FULL_RE.is_match(s.trim())
                {
                    // One UUID under several families: the first family listed wins.
                    let at = family_ids
                        .entry(s.trim().to_ascii_lowercase())
                        .or_insert(family);
                    *at = (*at).min(family);
                }
            }
        };
        let mut instances = HashMap::new();
        for r in raws {
            note_family_ids(&r.span.attributes);
            for e in &r.span.events {
                note_family_ids(&e.attributes);
            }
            if let Some(any_value::Value::StringValue(id)) = r
                .resource
                .and_then(|res| res.attributes.iter().find(|kv| kv.key == INSTANCE_KEY))
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            {
                let unordered = options.unordered_instances.iter().any(|s| s == r.service);
                // One id under several services: numbered under the first in name order, and
                // unordered if any of them is (arrival order must not decide).
                let at = instances
                    .entry(id.trim().to_ascii_lowercase())
                    .or_insert_with(|| (r.service.to_owned(), false));
                if r.service < at.0.as_str() {
                    at.0 = r.service.to_owned();
                }
                at.1 |= unordered;
            }
        }
        Self {
            raws,
            literals,
            span_index: raws
                .iter()
                .enumerate()
                .map(|(i, r)| (r.id.as_str(), i))
                .collect(),
            traces: raws.iter().map(|r| r.trace.as_str()).collect(),
            family_ids,
            family_names: options.id_families.iter().map(|f| f.name.clone()).collect(),
            instances,
            tokens: Vec::new(),
            token_index: HashMap::new(),
            unresolved: Vec::new(),
            partial: options.draw_orphans,
            names: Vec::new(),
        }
    }

    pub(super) fn mark(&mut self, token: Token) -> String {
        let index = *self.token_index.entry(token.clone()).or_insert_with(|| {
            self.tokens.push(token);
            self.tokens.len() - 1
        });
        format!("{MARK_START}{index}{MARK_END}")
    }

    /// Applies the string rules 1–7 of the policy.
    pub(super) fn text(&mut self, input: &str, paths: bool) -> String {
        let mut s = input.to_owned();
        for (literal, placeholder) in &self.literals {
            if s.contains(literal) {
                s = s.replace(literal, placeholder);
            }
        }
        s = replace(&ID_RE, &s, |c| {
            let m = &c[0];
            if m.len() == 32 && self.traces.contains(m) {
                self.mark(Token::TraceRef(m.to_owned()))
            } else if let Some(&i) = self.span_index.get(m).filter(|_| m.len() == 16) {
                self.mark(Token::SpanRef(i))
            } else {
                m.to_owned()
            }
        });
        s = replace(&UUID_RE, &s, |c| {
            let uuid = c[0].to_ascii_lowercase();
            if self.instances.contains_key(&uuid) {
                self.mark(Token::Instance(uuid))
            } else if let Some(&family) = self.family_ids.get(&uuid) {
                self.mark(Token::Family(family, uuid))
            } else {
                self.mark(Token::Uuid(uuid))
            }
        });
        s = TIMESTAMP_RE.replace_all(&s, "[timestamp]").into_owned();
        s = replace(&URL_RE, &s, |c| {
            let scheme = &c["scheme"];
            let user = c.name("user").map_or("", |m| m.as_str());
            let host = &c["host"];
            let host = if host.is_empty() || is_loopback(host) {
                host
            } else {
                "[host]"
            };
            let port = if c.name("port").is_some() {
                ":[port]"
            } else {
                ""
            };
            let path = c.name("path").map_or("", |m| m.as_str());
            let path = if scheme.eq_ignore_ascii_case("file") && paths {
                redact_path(path)
            } else {
                path.to_owned()
            };
            format!("{scheme}://{user}{host}{port}{path}")
        });
        s = replace(&ADDR_RE, &s, |c| {
            let host = &c["host"];
            let host = if is_loopback(host) { host } else { "[host]" };
            format!("{}{host}:[port]", &c["pre"])
        });
        if paths {
            s = replace(&PATH_RE, &s, |c| {
                format!("{}{}", &c["pre"], redact_path(&c["path"]))
            });
        }
        s
    }

    /// The policy's key rules, then the string rules; `None` drops the attribute.
    pub(super) fn value(
        &mut self,
        key: &str,
        value: Option<&AnyValue>,
        origin: usize,
    ) -> Option<Value> {
        let value = value.and_then(|v| v.value.as_ref());
        if key == INSTANCE_KEY
            && let Some(any_value::Value::StringValue(s)) = value
        {
            let id = s.trim().to_ascii_lowercase();
            if self.instances.contains_key(&id) {
                return Some(Value::Str(self.mark(Token::Instance(id))));
            }
        }
        let paths = match key_rule(key) {
            KeyRule::Drop => return None,
            KeyRule::Placeholder(p) => return Some(typed_placeholder(p, value)),
            KeyRule::Address => {
                if let Some(any_value::Value::StringValue(s)) = value {
                    let (host, port) = split_port(s);
                    if !is_loopback(host) {
                        let port = if port { ":[port]" } else { "" };
                        return Some(Value::Str(format!("[host]{port}")));
                    }
                }
                true
            }
            KeyRule::IdRef => {
                if let Some(any_value::Value::StringValue(s)) = value
                    && let Some(reference) = self.id_ref(key, s, origin)
                {
                    return Some(Value::Str(reference));
                }
                true
            }
            KeyRule::Text { paths } => paths,
        };
        Some(match value {
            None => Value::Empty,
            Some(any_value::Value::StringValue(s)) => Value::Str(self.text(s, paths)),
            Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
            Some(any_value::Value::IntValue(i)) => Value::Int(*i),
            Some(any_value::Value::DoubleValue(d)) => Value::Double(*d),
            Some(any_value::Value::BytesValue(b)) => Value::Bytes(b.clone()),
            Some(any_value::Value::StringValueStrindex(i)) => Value::Str(format!("[strindex {i}]")),
            Some(any_value::Value::ArrayValue(a)) => Value::Array(
                a.values
                    .iter()
                    .map(|v| self.value(key, Some(v), origin).unwrap_or(Value::Empty))
                    .collect(),
            ),
            Some(any_value::Value::KvlistValue(kvs)) => {
                let mut entries: Vec<(String, Value)> = kvs
                    .values
                    .iter()
                    .filter_map(|kv| {
                        let nested = format!("{key}.{}", kv.key);
                        Some((
                            kv.key.clone(),
                            self.value(&nested, kv.value.as_ref(), origin)?,
                        ))
                    })
                    .collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Map(entries)
            }
        })
    }

    /// Invariant 6: an id-valued attribute must name a span of the same trace (16 hex) or a
    /// trace of the data (32 hex). Returns the mark, or `None` for a value that is not an id.
    pub(super) fn id_ref(&mut self, key: &str, value: &str, origin: usize) -> Option<String> {
        let is_hex = |n: usize| {
            value.len() == n
                && value
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let here = &self.raws[origin];
        if is_hex(16) {
            match self.span_index.get(value) {
                Some(&i) if self.raws[i].trace == here.trace => {
                    return Some(self.mark(Token::SpanRef(i)));
                }
                None if self.partial => return Some(format!("→{}", crate::MISSING_REF)),
                found => {
                    let elsewhere = found
                        .map(|&i| {
                            format!(
                                " (it is {} of trace {})",
                                self.raws[i].describe(),
                                self.raws[i].trace
                            )
                        })
                        .unwrap_or_default();
                    let members: Vec<usize> = (0..self.raws.len())
                        .filter(|&i| self.raws[i].trace == here.trace)
                        .collect();
                    self.unresolved.push(format!(
                        "{}: {key}={value} names no span of its trace {}{elsewhere}; that trace holds: {}",
                        here.describe(),
                        here.trace,
                        list_spans(self.raws, &members)
                    ));
                }
            }
        } else if is_hex(32) {
            if self.traces.contains(value) {
                return Some(self.mark(Token::TraceRef(value.to_owned())));
            }
            let mut traces: Vec<&str> = self.traces.iter().copied().collect();
            traces.sort_unstable();
            self.unresolved.push(format!(
                "{} in trace {}: {key}={value} names no trace of the data (traces: {})",
                here.describe(),
                here.trace,
                traces.join(", ")
            ));
        }
        None
    }

    pub(super) fn attributes(&mut self, attrs: &[KeyValue], origin: usize) -> Vec<(String, Value)> {
        let mut out: Vec<(String, Value)> = attrs
            .iter()
            .filter_map(|kv| {
                Some((
                    kv.key.clone(),
                    self.value(&kv.key, kv.value.as_ref(), origin)?,
                ))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The redacted node of raw span `i` (no alias, no children yet).
    pub(super) fn node(&mut self, i: usize) -> SpanNode {
        let raw = &self.raws[i];
        let span = raw.span;
        let status = span.status.as_ref();
        let span_attributes = self.attributes(&span.attributes, i);
        let mut events: Vec<(u64, usize, Event)> = span
            .events
            .iter()
            .enumerate()
            .map(|(n, e)| {
                let level =
                    e.attributes
                        .iter()
                        .find(|kv| kv.key == "level")
                        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                            any_value::Value::StringValue(s) => Some(s.clone()),
                            _ => None,
                        });
                let message = if EVENT_WITHOUT_MESSAGE_RE.is_match(&e.name) {
                    String::new()
                } else {
                    self.text(&e.name, true)
                };
                // What the span line already shows is not repeated on its events.
                let mut attributes = self.attributes(&e.attributes, i);
                attributes.retain(|a| !span_attributes.contains(a));
                (
                    e.time_unix_nano,
                    n,
                    Event {
                        level,
                        message,
                        attributes,
                        dropped_attributes: e.dropped_attributes_count,
                    },
                )
            })
            .collect();
        events.sort_by_key(|(t, n, _)| (*t, *n));
        let links: Vec<Link> = span
            .links
            .iter()
            .map(|l| {
                let target = self
                    .span_index
                    .get(hex(&l.span_id).as_str())
                    .copied()
                    .filter(|&t| self.raws[t].trace == hex(&l.trace_id))
                    .map(|t| self.mark(Token::SpanRef(t)));
                Link {
                    target,
                    attributes: self.attributes(&l.attributes, i),
                }
            })
            .collect();
        SpanNode {
            alias: String::new(),
            show_alias: false,
            service: raw.service.to_owned(),
            name: self.text(&span.name, false),
            kind: SpanKind::from_otlp(span.kind),
            status: Status {
                code: StatusCode::from_otlp(status.map_or(0, |s| s.code)),
                message: status
                    .map(|s| self.text(&s.message, true))
                    .unwrap_or_default(),
            },
            attributes: span_attributes,
            events: events.into_iter().map(|(_, _, e)| e).collect(),
            links,
            entry: self.entry(i),
            dropped: Dropped {
                attributes: span.dropped_attributes_count,
                events: span.dropped_events_count,
                links: span.dropped_links_count,
            },
            children: Vec::new(),
        }
    }

    /// The resource and scope of raw span `i` when its service enters the trace there: it is a
    /// root (or its parent never arrived), or its parent came from another resource or scope.
    pub(super) fn entry(&mut self, i: usize) -> Option<Entry> {
        let raw = &self.raws[i];
        let parent = raw
            .parent
            .as_deref()
            .and_then(|p| self.span_index.get(p))
            .map(|&p| &self.raws[p])
            .filter(|p| p.trace == raw.trace);
        if parent.is_some_and(|p| p.resource == raw.resource && p.scope == raw.scope) {
            return None;
        }
        let resource: Vec<KeyValue> = raw
            .resource
            .map(|r| {
                r.attributes
                    .iter()
                    .filter(|kv| kv.key != "service.name")
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let scope = raw.scope.cloned().unwrap_or_default();
        Some(Entry {
            resource: self.attributes(&resource, i),
            scope: self.text(&scope.name, false),
            scope_version: self.text(&scope.version, false),
            scope_attributes: self.attributes(&scope.attributes, i),
        })
    }

    /// `s` with every mark replaced by its unnumbered form (`[run#]`, `→create_run`): the form
    /// sort keys are computed from.
    pub(super) fn unnumbered(&self, s: &str) -> String {
        self.unnumbered_at(s, 0)
    }

    pub(super) fn unnumbered_at(&self, s: &str, depth: usize) -> String {
        map_marks(s, |index| match &self.tokens[index] {
            Token::Family(family, _) => format!("[{}#]", self.family_names[*family]),
            Token::Uuid(_) => "[uuid#]".to_owned(),
            Token::TraceRef(_) => "→trace#".to_owned(),
            Token::Instance(_) => "[instance#]".to_owned(),
            Token::SpanRef(_) if depth > 0 => "→span#".to_owned(),
            Token::SpanRef(i) => format!("→{}", self.unnumbered_at(&self.names[*i], depth + 1)),
        })
    }
}

/// Replaces every `MARK_START index MARK_END` of `s` by `f(index)`.
pub(super) fn map_marks(s: &str, mut f: impl FnMut(usize) -> String) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find(MARK_START) {
        out.push_str(&rest[..start]);
        let after = &rest[start + MARK_START.len_utf8()..];
        let end = after.find(MARK_END).expect("marks are balanced");
        out.push_str(&f(after[..end].parse().expect("a mark holds an index")));
        rest = &after[end + MARK_END.len_utf8()..];
    }
    out.push_str(rest);
    out
}

/// Applies `f` to every redacted string of `node` (not its children) in render order: name,
/// status message, attribute values, the entry (resource values, scope), then each event
/// (message, values) and link (target, values).
pub(super) fn map_strings(node: &mut SpanNode, f: &mut impl FnMut(&str) -> String) {
    fn value(v: &mut Value, f: &mut impl FnMut(&str) -> String) {
        match v {
            Value::Str(s) => *s = f(s),
            Value::Array(items) => items.iter_mut().for_each(|i| value(i, f)),
            Value::Map(entries) => entries.iter_mut().for_each(|(_, v)| value(v, f)),
            Value::Int(_) | Value::Double(_) | Value::Bool(_) | Value::Bytes(_) | Value::Empty => {}
        }
    }
    node.name = f(&node.name);
    node.status.message = f(&node.status.message);
    node.attributes.iter_mut().for_each(|(_, v)| value(v, f));
    if let Some(entry) = &mut node.entry {
        entry.resource.iter_mut().for_each(|(_, v)| value(v, f));
        entry.scope = f(&entry.scope);
        entry.scope_version = f(&entry.scope_version);
        entry
            .scope_attributes
            .iter_mut()
            .for_each(|(_, v)| value(v, f));
    }
    for e in &mut node.events {
        e.message = f(&e.message);
        e.attributes.iter_mut().for_each(|(_, v)| value(v, f));
    }
    for l in &mut node.links {
        if let Some(t) = &mut l.target {
            *t = f(t);
        }
        l.attributes.iter_mut().for_each(|(_, v)| value(v, f));
    }
}
