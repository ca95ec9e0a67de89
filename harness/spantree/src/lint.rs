//! The semantic-convention lint: every attribute of every span is either declared for that
//! span in the [`Registry`] (or as a common attribute) with the value type it has, or a known
//! OpenTelemetry semantic-convention attribute ([`crate::semconv`]) with the type the
//! convention gives it. Deprecated convention names, wrong types, undeclared attributes,
//! undeclared spans and missing required attributes are findings.
//!
//! It reads the raw OTLP data, before redaction: a placeholder would hide the type.
//! With a registry, a semantic-convention attribute must be declared too (`semconv = true`):
//! the lint and the book apply one rule, [`Registry::declared`]. Without a registry only the
//! convention checks apply (deprecated names, wrong types), so `spantree check` is useful on
//! anyone's dump.

use std::collections::BTreeMap;
use std::fmt;

use opentelemetry_proto::tonic::trace::v1::TracesData;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind as OtlpKind;

use crate::registry::{Registry, Requirement};
use crate::semconv::{self, AttrType};

/// One problem, for every span it was seen on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// The span's service (`service.name`).
    pub service: String,
    /// The span's name.
    pub span: String,
    /// What is wrong.
    pub problem: String,
    /// On how many spans.
    pub count: usize,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} `{}`: {}", self.service, self.span, self.problem)?;
        if self.count > 1 {
            write!(f, " ({} spans)", self.count)?;
        }
        Ok(())
    }
}

/// The registry's name for an OTLP span kind.
#[must_use]
pub fn kind_name(kind: i32) -> &'static str {
    match OtlpKind::try_from(kind).unwrap_or(OtlpKind::Unspecified) {
        OtlpKind::Server => "server",
        OtlpKind::Client => "client",
        OtlpKind::Producer => "producer",
        OtlpKind::Consumer => "consumer",
        OtlpKind::Internal | OtlpKind::Unspecified => "internal",
    }
}

/// Lints every span of `data` (see the module docs), one finding per distinct problem.
#[must_use]
pub fn lint(data: &TracesData, registry: Option<&Registry>) -> Vec<Finding> {
    let mut found: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for rs in &data.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| match v.value.as_ref()? {
                opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s) => {
                    Some(s.clone())
                }
                _ => None,
            })
            .unwrap_or_else(|| "unknown_service".to_owned());
        for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
            let kind = kind_name(span.kind);
            let spec = registry.and_then(|r| r.span(&service, &span.name, kind));
            // Grouped by the pattern a span falls under (`publish metis.runs.*`), so one
            // problem of every run message's producer span is one finding with a count; a
            // catch-all `*` (every server span) keeps the span's own name (`POST /runs`).
            let group = spec
                .filter(|s| s.name.contains('*') && s.name != "*")
                .map_or_else(|| span.name.clone(), |s| s.name.clone());
            let mut add = |problem: String| {
                *found
                    .entry((service.clone(), group.clone(), problem))
                    .or_default() += 1;
            };
            if let Some(r) = registry
                && spec.is_none()
            {
                let other_kind = r
                    .lookup(&service, &span.name, None)
                    .map(|(_, s)| s)
                    .filter(|s| s.name != "*");
                add(match other_kind {
                    Some(s) => format!(
                        "kind {kind}, but the registry declares `{}` as {}",
                        s.name, s.kind
                    ),
                    None => format!("the registry declares no such span (kind {kind})"),
                });
            }
            for kv in &span.attributes {
                let key = kv.key.as_str();
                let actual = kv.value.as_ref().and_then(AttrType::of);
                let actual_name = actual.map_or("an untyped value", AttrType::name);
                let declared = match (registry, spec) {
                    (Some(r), Some(s)) => r.declared(s, key),
                    (Some(r), None) => r.common(key),
                    (None, _) => None,
                };
                let conv = semconv::lookup(key);
                let (expected, whose) = match (declared, conv) {
                    // Declared wins: a registry may keep a name the conventions later took.
                    (Some(d), _) => (d.ty, "the registry declares"),
                    (None, Some((c, _))) => {
                        if let Some(note) = c.deprecated {
                            add(format!(
                                "attribute `{key}` is a deprecated semantic-convention attribute ({note})"
                            ));
                            continue;
                        }
                        if registry.is_some() && spec.is_some() {
                            // One rule with the book: the registry declares what a span carries.
                            add(format!(
                                "attribute `{key}` is a semantic-convention attribute the registry does not declare for this span (add it with `semconv = true`)"
                            ));
                        }
                        (c.ty, "the semantic convention gives")
                    }
                    (None, None) => {
                        if registry.is_some() {
                            add(format!(
                                "attribute `{key}` ({actual_name}) is neither declared in the registry nor a semantic-convention attribute"
                            ));
                        }
                        continue;
                    }
                };
                if let Some(want) = expected
                    && actual != Some(want)
                {
                    add(format!(
                        "attribute `{key}` is {actual_name}, but {whose} {want}"
                    ));
                }
            }
            if let Some(spec) = spec {
                for a in spec
                    .attributes
                    .iter()
                    .filter(|a| a.requirement == Requirement::Required)
                {
                    if !span.attributes.iter().any(|kv| kv.key == a.name) {
                        add(format!("required attribute `{}` is missing", a.name));
                    }
                }
            }
        }
    }
    found
        .into_iter()
        .map(|((service, span, problem), count)| Finding {
            service,
            span,
            problem,
            count,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{SERVER, otlp, span};

    fn registry() -> Registry {
        Registry::parse(
            r#"
[[common]]
name = "busy_ns"
type = "int"
meaning = "busy"

[[span]]
name = "*"
service = "metis-api"
kind = "server"
meaning = "HTTP server span"
attributes = [
  { name = "http.request.method", semconv = true, requirement = "required" },
  { name = "http.response.status_code", semconv = true },
  { name = "url.path", semconv = true },
]

[[span]]
name = "create_run"
service = "metis-api"
kind = "internal"
meaning = "creates a run"
attributes = [{ name = "run_id", type = "string", requirement = "required", meaning = "the run" }]
"#,
        )
        .unwrap()
    }

    #[test]
    fn conformant_spans_have_no_findings() {
        let d = otlp(&[
            span("metis-api", "POST /runs", 1)
                .trace(1)
                .kind(SERVER)
                .attr("http.request.method", "POST")
                .attr("http.response.status_code", 200_i64)
                .attr("busy_ns", 5_i64)
                .attr("url.path", "/runs"),
            span("metis-api", "create_run", 2)
                .trace(1)
                .parent(1)
                .attr("run_id", "r"),
        ]);
        assert_eq!(lint(&d, Some(&registry())), vec![]);
    }

    /// A semantic-convention attribute is declared like any other: the rule the book applies.
    #[test]
    fn an_undeclared_convention_attribute_is_a_finding_with_a_registry_only() {
        let d = otlp(&[span("metis-api", "create_run", 2)
            .trace(1)
            .attr("run_id", "r")
            .attr("server.address", "metis")]);
        let found = lint(&d, Some(&registry()));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].problem.contains(
                "`server.address` is a semantic-convention attribute the registry does not declare"
            ),
            "{found:?}"
        );
        assert_eq!(lint(&d, None), vec![]);
    }

    #[test]
    fn every_kind_of_finding_is_reported_once_with_a_count() {
        let d = otlp(&[
            span("metis-api", "POST /runs", 1)
                .trace(1)
                .kind(SERVER)
                .attr("http.method", "POST")
                .attr("http.response.status_code", "200")
                .attr("url.path", 3_i64),
            span("metis-api", "create_run", 2)
                .trace(1)
                .parent(1)
                .attr("run_id", 7_i64)
                .attr("mood", "good"),
            span("metis-api", "create_run", 3)
                .trace(2)
                .attr("mood", "good"),
            span("metis-api", "create_run", 4).trace(3).kind(SERVER),
            span("metis-api", "delete_run", 5).trace(4),
        ]);
        let findings: Vec<String> = lint(&d, Some(&registry()))
            .iter()
            .map(ToString::to_string)
            .collect();
        let all = findings.join("\n");
        for want in [
            "metis-api `POST /runs`: attribute `http.method` is a deprecated semantic-convention attribute (Replaced by `http.request.method`.)",
            "metis-api `POST /runs`: attribute `http.response.status_code` is string, but the registry declares int",
            "metis-api `POST /runs`: attribute `url.path` is int, but the registry declares string",
            "metis-api `POST /runs`: required attribute `http.request.method` is missing",
            "metis-api `create_run`: attribute `run_id` is int, but the registry declares string",
            "metis-api `create_run`: attribute `mood` (string) is neither declared in the registry nor a semantic-convention attribute (2 spans)",
            "metis-api `create_run`: required attribute `run_id` is missing",
            "metis-api `delete_run`: the registry declares no such span (kind internal)",
        ] {
            assert!(
                findings.iter().any(|f| f == want),
                "missing {want:?} in:\n{all}"
            );
        }
        // create_run as a server span falls under the `*` server declaration instead.
        assert!(
            all.contains(
                "metis-api `create_run`: required attribute `http.request.method` is missing"
            ),
            "{all}"
        );
    }

    #[test]
    fn without_a_registry_only_the_conventions_apply() {
        let d = otlp(&[span("other", "GET", 1)
            .trace(1)
            .kind(SERVER)
            .attr("http.method", "GET")
            .attr("mine", "x")
            .attr("server.port", "80")]);
        let all: Vec<String> = lint(&d, None).iter().map(ToString::to_string).collect();
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all[0].contains("`http.method` is a deprecated"), "{all:?}");
        assert!(
            all[1].contains("`server.port` is string, but the semantic convention gives int"),
            "{all:?}"
        );
    }
}
