//! The span registry: a TOML file that declares every span a system emits — name, kind,
//! service, meaning — and each attribute with its type, requirement level and meaning (or a
//! reference to the OpenTelemetry semantic convention that defines it). Metis's is
//! `crates/telemetry/spans.toml`; [`crate::lint`] checks spans against one.
//!
//! ```toml
//! # attributes any span may carry (added by the SDK)
//! [[common]]
//! name = "busy_ns"
//! type = "int"
//! meaning = "Time the span was entered, in nanoseconds (tracing-opentelemetry)."
//!
//! [[span]]
//! name = "publish metis.runs.*"   # `*` matches any text
//! title = "run message publish"   # optional: a name for docs when `name` is a pattern
//! service = "metis-api"
//! kind = "producer"
//! meaning = "The JetStream publish of a run message."
//! attributes = [
//!   { name = "messaging.system", semconv = true, requirement = "required" },
//!   { name = "run_id", type = "string", requirement = "required", meaning = "The run." },
//! ]
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::semconv::{self, AttrType};

/// How strongly a span must carry an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requirement {
    /// On every span of its kind: a span without it is a finding.
    Required,
    /// When a condition holds (say which in the meaning).
    ConditionallyRequired,
    /// When available.
    #[default]
    Recommended,
}

impl Requirement {
    /// The name as written in the registry.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::ConditionallyRequired => "conditionally_required",
            Self::Recommended => "recommended",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAttribute {
    name: String,
    #[serde(rename = "type")]
    ty: Option<String>,
    #[serde(default)]
    semconv: bool,
    #[serde(default)]
    requirement: Requirement,
    meaning: Option<String>,
    /// Why an own attribute has the name of a semantic-convention attribute (say, a
    /// deprecated one): without it, such a name is refused.
    collision: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpan {
    name: String,
    title: Option<String>,
    service: String,
    kind: String,
    meaning: String,
    #[serde(default)]
    attributes: Vec<RawAttribute>,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    not_in_snapshots: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    #[serde(default)]
    common: Vec<RawAttribute>,
    #[serde(default)]
    span: Vec<RawSpan>,
}

/// One declared attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeSpec {
    /// Its key.
    pub name: String,
    /// Its type: declared, or the semantic convention's (`None` when the convention's
    /// examples show none).
    pub ty: Option<AttrType>,
    /// The semantic-convention attribute it is, when declared `semconv = true`.
    pub semconv: Option<&'static semconv::Attribute>,
    /// How strongly it is required.
    pub requirement: Requirement,
    /// What it means: declared, or the convention's brief.
    pub meaning: String,
    /// Why an own attribute is named like a semantic-convention attribute, when it is.
    pub collision: Option<String>,
}

/// The OpenTelemetry span kinds, as the registry names them.
pub const KINDS: [&str; 5] = ["internal", "server", "client", "producer", "consumer"];

/// One declared span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanSpec {
    /// Its name; `*` matches any text (`publish metis.runs.*`, `*` for every server span).
    pub name: String,
    /// What to call it in documentation when the name is a pattern (`HTTP server span`).
    pub title: Option<String>,
    /// The `service.name` of the service that emits it.
    pub service: String,
    /// `internal`, `server`, `client`, `producer` or `consumer`.
    pub kind: String,
    /// One sentence: what the span is for.
    pub meaning: String,
    /// Its attributes.
    pub attributes: Vec<AttributeSpec>,
    /// The messages of the events it carries (documentation; not linted).
    pub events: Vec<String>,
    /// Why the snapshots never show it, when they do not (documentation).
    pub not_in_snapshots: Option<String>,
}

impl SpanSpec {
    /// Whether a span named `name` matches this declaration's name pattern.
    #[must_use]
    pub fn matches_name(&self, name: &str) -> bool {
        glob(&self.name, name)
    }

    /// The declared attribute `key`.
    #[must_use]
    pub fn attribute(&self, key: &str) -> Option<&AttributeSpec> {
        self.attributes.iter().find(|a| a.name == key)
    }
}

/// `*` matches any (possibly empty) text; everything else literally.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    if parts.is_empty() {
        return rest.is_empty();
    }
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// A parsed, checked registry.
#[derive(Debug, Clone, PartialEq)]
pub struct Registry {
    /// Attributes any span may carry.
    pub common: Vec<AttributeSpec>,
    /// The spans, in file order.
    pub spans: Vec<SpanSpec>,
}

/// A registry that cannot be used, with every reason.
#[derive(Debug, thiserror::Error)]
#[error("span registry {source_name}: {}", problems.join("; "))]
pub struct RegistryError {
    /// The file (or `<text>`).
    pub source_name: String,
    /// What is wrong.
    pub problems: Vec<String>,
}

impl Registry {
    /// Reads and checks the registry at `path`.
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let text = std::fs::read_to_string(path).map_err(|e| RegistryError {
            source_name: path.display().to_string(),
            problems: vec![format!("cannot read it: {e}")],
        })?;
        Self::parse(&text).map_err(|mut e| {
            e.source_name = path.display().to_string();
            e
        })
    }

    /// Parses and checks registry text.
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        let fail = |problems| RegistryError {
            source_name: "<text>".to_owned(),
            problems,
        };
        let raw: RawRegistry = toml::from_str(text).map_err(|e| fail(vec![e.to_string()]))?;
        let mut problems = Vec::new();
        let common = raw
            .common
            .into_iter()
            .filter_map(|a| attribute(a, "[[common]]", &mut problems))
            .collect();
        let mut spans = Vec::new();
        for s in raw.span {
            let at = format!("span `{}` ({})", s.name, s.service);
            if !KINDS.contains(&s.kind.as_str()) {
                problems.push(format!(
                    "{at}: kind `{}` is not one of {}",
                    s.kind,
                    KINDS.join(", ")
                ));
            }
            let mut seen = std::collections::HashSet::new();
            let mut attributes = Vec::new();
            for a in s.attributes {
                if !seen.insert(a.name.clone()) {
                    problems.push(format!("{at}: attribute `{}` is declared twice", a.name));
                }
                if let Some(a) = attribute(a, &at, &mut problems) {
                    attributes.push(a);
                }
            }
            spans.push(SpanSpec {
                name: s.name,
                title: s.title,
                service: s.service,
                kind: s.kind,
                meaning: s.meaning,
                attributes,
                events: s.events,
                not_in_snapshots: s.not_in_snapshots,
            });
        }
        for (i, a) in spans.iter().enumerate() {
            if spans[..i]
                .iter()
                .any(|b| a.name == b.name && a.service == b.service && a.kind == b.kind)
            {
                problems.push(format!(
                    "span `{}` ({}, {}) is declared twice",
                    a.name, a.service, a.kind
                ));
            }
        }
        if problems.is_empty() {
            Ok(Self { common, spans })
        } else {
            Err(fail(problems))
        }
    }

    /// The declaration a span of `service` named `name` of `kind` falls under: the matching
    /// one with the longest literal name (an exact name before a pattern).
    #[must_use]
    pub fn span(&self, service: &str, name: &str, kind: &str) -> Option<&SpanSpec> {
        self.lookup(service, name, Some(kind)).map(|(_, s)| s)
    }

    /// [`Registry::span`] with the declaration's index in [`Registry::spans`]; `kind: None`
    /// matches any kind.
    #[must_use]
    pub fn lookup(
        &self,
        service: &str,
        name: &str,
        kind: Option<&str>,
    ) -> Option<(usize, &SpanSpec)> {
        self.spans
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.service == service && kind.is_none_or(|k| s.kind == k) && s.matches_name(name)
            })
            .max_by_key(|(_, s)| s.name.replace('*', "").len())
    }

    /// A common attribute.
    #[must_use]
    pub fn common(&self, key: &str) -> Option<&AttributeSpec> {
        self.common.iter().find(|a| a.name == key)
    }

    /// The one rule every check applies (the e2e lint, `spantree check`, the book): an
    /// attribute of a span is declared for that span, or common. A semantic-convention
    /// attribute is no exception — the registry declares it with `semconv = true`, which
    /// takes the convention's type and meaning.
    #[must_use]
    pub fn declared<'a>(&'a self, spec: &'a SpanSpec, key: &str) -> Option<&'a AttributeSpec> {
        spec.attribute(key).or_else(|| self.common(key))
    }

    /// The registry `spantree check` uses when given none: the nearest `spans.toml`, or
    /// `crates/telemetry/spans.toml` (Metis's), in `dir` or a folder above it.
    #[must_use]
    pub fn find_from(dir: &Path) -> Option<std::path::PathBuf> {
        dir.ancestors().find_map(|d| {
            [d.join("spans.toml"), d.join("crates/telemetry/spans.toml")]
                .into_iter()
                .find(|p| p.is_file())
        })
    }

    /// Checks the field names of one span as `tracing` sees it (for in-process tests, where
    /// no types are known): the span is declared, every field is declared for it (or common),
    /// every required attribute is there. `otel.*` fields are tracing-opentelemetry directives
    /// (name, kind, status), not attributes, and are skipped.
    pub fn check_fields<'a>(
        &self,
        service: &str,
        name: &str,
        kind: &str,
        fields: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), String> {
        let spec = self.span(service, name, kind).ok_or_else(|| {
            format!("span `{name}` ({service}, {kind}) is not in the span registry")
        })?;
        let fields: Vec<&str> = fields
            .into_iter()
            .filter(|k| !k.starts_with("otel."))
            .collect();
        for k in &fields {
            if spec.attribute(k).is_none() && self.common(k).is_none() {
                return Err(format!(
                    "span `{name}` has the field `{k}`, which the span registry does not declare for it"
                ));
            }
        }
        for a in spec
            .attributes
            .iter()
            .filter(|a| a.requirement == Requirement::Required)
        {
            if !fields.contains(&a.name.as_str()) {
                return Err(format!(
                    "span `{name}` lacks `{}`, which the span registry requires",
                    a.name
                ));
            }
        }
        Ok(())
    }

    /// Metis's registry, `crates/telemetry/spans.toml` in this workspace.
    pub fn metis() -> Result<Self, RegistryError> {
        Self::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/telemetry/spans.toml"))
    }
}

fn attribute(a: RawAttribute, at: &str, problems: &mut Vec<String>) -> Option<AttributeSpec> {
    let declared = match a.ty.as_deref().map(|t| (t, AttrType::parse(t))) {
        Some((t, None)) => {
            problems.push(format!(
                "{at}: attribute `{}` has the unknown type `{t}` (one of {})",
                a.name,
                AttrType::ALL.map(AttrType::name).join(", ")
            ));
            return None;
        }
        Some((_, ty)) => ty,
        None => None,
    };
    if a.semconv {
        let Some((conv, _)) = semconv::lookup(&a.name) else {
            problems.push(format!(
                "{at}: attribute `{}` is declared `semconv = true` but is not a semantic-convention attribute",
                a.name
            ));
            return None;
        };
        if let Some(note) = conv.deprecated {
            problems.push(format!(
                "{at}: attribute `{}` is a deprecated semantic-convention attribute ({note})",
                a.name
            ));
        }
        if let (Some(d), Some(c)) = (declared, conv.ty)
            && d != c
        {
            problems.push(format!(
                "{at}: attribute `{}` is declared {d}, but the semantic convention says {c}",
                a.name
            ));
        }
        return Some(AttributeSpec {
            ty: declared.or(conv.ty),
            semconv: Some(conv),
            requirement: a.requirement,
            meaning: a.meaning.unwrap_or_else(|| conv.brief.to_owned()),
            name: a.name,
            collision: None,
        });
    }
    match (semconv::lookup(&a.name), &a.collision) {
        (Some((conv, _)), None) => {
            problems.push(format!(
                "{at}: attribute `{}` is a semantic-convention attribute{}: declare it `semconv = true`, rename it, or say why it keeps the name (`collision`)",
                a.name,
                conv.deprecated.map_or_else(String::new, |n| format!(" (deprecated: {n})"))
            ));
            return None;
        }
        (None, Some(_)) => {
            problems.push(format!(
                "{at}: attribute `{}` has a `collision` but collides with no semantic-convention attribute",
                a.name
            ));
            return None;
        }
        _ => {}
    }
    let (Some(ty), Some(meaning)) = (declared, a.meaning) else {
        problems.push(format!(
            "{at}: attribute `{}` needs a `type` and a `meaning` (or `semconv = true`)",
            a.name
        ));
        return None;
    };
    Some(AttributeSpec {
        name: a.name,
        ty: Some(ty),
        semconv: None,
        requirement: a.requirement,
        meaning,
        collision: a.collision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*", "POST /runs"));
        assert!(glob(
            "publish metis.runs.*",
            "publish metis.runs.generic.1.SH.1"
        ));
        assert!(!glob("publish metis.runs.*", "publish metis.cancel.x"));
        assert!(glob("a*c*e", "abcde"));
        assert!(!glob("a*c*e", "abcdf"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
    }

    #[test]
    fn a_registry_is_checked_when_parsed() {
        let ok = Registry::parse(
            r#"
[[common]]
name = "busy_ns"
type = "int"
meaning = "busy"

[[span]]
name = "publish *"
service = "svc"
kind = "producer"
meaning = "m"
attributes = [
  { name = "messaging.system", semconv = true, requirement = "required" },
  { name = "run_id", type = "string", meaning = "the run" },
  { name = "state", type = "string", meaning = "ours", collision = "older than the convention" },
]
"#,
        )
        .unwrap();
        let span = ok.span("svc", "publish x", "producer").unwrap();
        assert_eq!(span.attribute("run_id").unwrap().ty, Some(AttrType::String));
        assert!(
            span.attribute("messaging.system")
                .unwrap()
                .semconv
                .is_some()
        );
        assert!(ok.span("svc", "publish x", "consumer").is_none());

        let bad = Registry::parse(
            r#"
[[span]]
name = "s"
service = "svc"
kind = "sideways"
meaning = "m"
attributes = [
  { name = "http.method", semconv = true },
  { name = "http.route", type = "string", meaning = "route" },
  { name = "run_id", type = "uuid", meaning = "the run" },
  { name = "user_id" },
  { name = "made.up", semconv = true },
  { name = "url.path", semconv = true, type = "int" },
  { name = "state", type = "string", meaning = "s" },
]

[[span]]
name = "t"
service = "svc"
kind = "internal"
meaning = "m"
attributes = [{ name = "run_id", type = "string", meaning = "r", collision = "none" }]
"#,
        )
        .unwrap_err();
        let all = bad.problems.join("\n");
        for want in [
            "kind `sideways`",
            "`http.method` is a deprecated semantic-convention attribute",
            "`http.route` is a semantic-convention attribute: declare it `semconv = true`",
            "`state` is a semantic-convention attribute (deprecated: Replaced by `db.client.connection.state`.)",
            "`run_id` has a `collision` but collides with no",
            "unknown type `uuid`",
            "`user_id` needs a `type` and a `meaning`",
            "`made.up` is declared `semconv = true` but is not",
            "`url.path` is declared int, but the semantic convention says string",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
    }
}
