//! A view: everything besides the dump that decides which tree a dump renders to — id
//! families, literal redactions, interchangeable instances, the expected trace count, partial
//! traces, and which traces are shown (only those of some units of work, or their census) —
//! as a small text file. The e2e harness renders every snapshot through a [`View`] and writes
//! it beside the scenario's `spans.json` as `view.txt`, so
//! `spantree diff --view view.txt SNAPSHOT spans.json` compares a dump with its snapshot
//! exactly as the test did (and a test checks it finds nothing).
//!
//! The text, one directive a line (`#` comments, blank lines ignored):
//!
//! ```text
//! id-family run_id run
//! redact /tmp/e2e-x1 => [e2e-dir]
//! unordered-instances metis-engine-generic
//! expect-traces 1
//! draw-orphans
//! only run_id 0190c4c2-… 0190c4c3-…
//! census run_id 0190c4c2-… 0190c4c3-…
//! annotations e2e-harness
//! ```
//!
//! `only` keeps the traces holding a span whose attribute has one of the values; `census`
//! renders [`shape_census`](crate::shape_census) over them instead of one forest.
//! `annotations` names a service whose own traces (rooted in it: the e2e harness's trace of
//! the faults it injected) are shown whatever `only` selects, and in a census as a shape of
//! their own. A dump's successful read-only requests are always dropped, as the snapshots
//! drop them.

use std::fmt::Write as _;

use opentelemetry_proto::tonic::trace::v1::TracesData;

use crate::{Options, SpanForest, TreeError};

/// How to render a dump (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Normalisation options.
    pub options: Options,
    /// Keep only traces with a span whose attribute `.0` is one of `.1`.
    pub only: Option<(String, Vec<String>)>,
    /// Render the shape census of these units of work (attribute, values).
    pub census: Option<(String, Vec<String>)>,
    /// The service whose own traces are always shown (see the module docs).
    pub annotations: Option<String>,
}

impl View {
    /// A view of one forest with `options`.
    #[must_use]
    pub fn new(options: Options) -> Self {
        Self {
            options,
            ..Self::default()
        }
    }

    /// Only the traces holding a span whose attribute `key` has one of `values`.
    #[must_use]
    pub fn only(mut self, key: &str, values: &[&str]) -> Self {
        self.only = Some(selection(key, values));
        self
    }

    /// The shape census of the units of work with these `key` values.
    #[must_use]
    pub fn census(mut self, key: &str, values: &[&str]) -> Self {
        self.census = Some(selection(key, values));
        self
    }

    /// Always show the traces rooted in `service` (see the module docs).
    #[must_use]
    pub fn annotations(mut self, service: &str) -> Self {
        self.annotations = Some(service.to_owned());
        self
    }

    /// The forest of `data` in this view, ignoring `census` (the forest a test's
    /// expectations read).
    pub fn forest(&self, data: &TracesData) -> Result<SpanForest, TreeError> {
        let selected = match &self.only {
            Some((key, values)) => {
                let values: Vec<&str> = values.iter().map(String::as_str).collect();
                let chosen = crate::only_traces_with(data, key, &values);
                let mut wanted: std::collections::HashSet<&[u8]> = chosen
                    .resource_spans
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .flat_map(|s| &s.spans)
                    .map(|s| s.trace_id.as_slice())
                    .collect();
                if let Some(service) = &self.annotations {
                    wanted.extend(crate::trace_ids_rooted_in(data, service));
                }
                crate::keep_traces(data, &wanted)
            }
            None => data.clone(),
        };
        SpanForest::from_otlp(&crate::without_read_only_requests(&selected), &self.options)
    }

    /// The tree text of `data` in this view.
    pub fn render(&self, data: &TracesData) -> Result<String, TreeError> {
        if let Some((key, values)) = &self.census {
            let data = crate::without_read_only_requests(data);
            let annotations = self
                .annotations
                .as_deref()
                .map(|service| crate::only_traces_rooted_in(&data, service))
                .filter(|a| !a.resource_spans.is_empty());
            let units = values
                .iter()
                .map(|v| crate::only_traces_with(&data, key, &[v.as_str()]))
                .chain(annotations);
            return crate::census_of(units, &self.options);
        }
        self.forest(data).map(|f| f.render())
    }

    /// The view as text ([`View::parse`] reads it back).
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut out =
            String::from("# spantree view: `spantree diff --view THIS_FILE SNAPSHOT spans.json`\n");
        let o = &self.options;
        for f in &o.id_families {
            let _ = writeln!(out, "id-family {} {}", f.key, f.name);
        }
        for r in &o.redactions {
            let _ = writeln!(out, "redact {} => {}", r.literal, r.placeholder);
        }
        for s in &o.unordered_instances {
            let _ = writeln!(out, "unordered-instances {s}");
        }
        if let Some(n) = o.expected_traces {
            let _ = writeln!(out, "expect-traces {n}");
        }
        if o.draw_orphans {
            out.push_str("draw-orphans\n");
        }
        for (word, selection) in [("only", &self.only), ("census", &self.census)] {
            if let Some((key, values)) = selection {
                let _ = writeln!(out, "{word} {key} {}", values.join(" "));
            }
        }
        if let Some(service) = &self.annotations {
            let _ = writeln!(out, "annotations {service}");
        }
        out
    }

    /// Reads a view's text; an error names the line and what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut view = Self::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| format!("line {}: {why}: {line:?}", i + 1);
            let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
            let words: Vec<&str> = rest.split_whitespace().collect();
            match (word, words.as_slice()) {
                ("id-family", [key, name]) => {
                    view.options = std::mem::take(&mut view.options).id_family(*key, *name);
                }
                ("redact", _) => {
                    let (literal, placeholder) = rest
                        .split_once(" => ")
                        .ok_or_else(|| bad("expected `redact LITERAL => PLACEHOLDER`"))?;
                    if literal.is_empty() {
                        return Err(bad("an empty literal"));
                    }
                    view.options = std::mem::take(&mut view.options).redact(literal, placeholder);
                }
                ("unordered-instances", [service]) => {
                    view.options = std::mem::take(&mut view.options).unordered_instances(*service);
                }
                ("expect-traces", [n]) => {
                    let n = n.parse().map_err(|_| bad("expected a count"))?;
                    view.options = std::mem::take(&mut view.options).expect_traces(n);
                }
                ("draw-orphans", []) => view.options.draw_orphans = true,
                ("only", [key, values @ ..]) if !values.is_empty() => {
                    view = view.only(key, values);
                }
                ("census", [key, values @ ..]) if !values.is_empty() => {
                    view = view.census(key, values);
                }
                ("annotations", [service]) => view = view.annotations(service),
                _ => {
                    return Err(bad(
                        "expected id-family KEY NAME, redact LITERAL => PLACEHOLDER, \
                         unordered-instances SERVICE, expect-traces N, draw-orphans, \
                         only KEY VALUE…, census KEY VALUE…, or annotations SERVICE",
                    ));
                }
            }
        }
        Ok(view)
    }
}

/// An attribute key and the values it selects, owned.
fn selection(key: &str, values: &[&str]) -> (String, Vec<String>) {
    (
        key.to_owned(),
        values.iter().map(|v| (*v).to_owned()).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_reads_back_what_it_wrote() {
        let view = View::new(
            Options::new()
                .id_family("run_id", "run")
                .redact("/tmp/a b", "[e2e-dir]")
                .unordered_instances("metis-engine-generic")
                .expect_traces(2)
                .draw_orphans(),
        )
        .only("run_id", &["a", "b"])
        .census("run_id", &["c"])
        .annotations("e2e-harness");
        let text = view.to_text();
        let again = View::parse(&text).unwrap();
        assert_eq!(again.to_text(), text);
        assert_eq!(again.only, view.only);
        assert_eq!(again.annotations, view.annotations);
        assert_eq!(again.options.redactions, view.options.redactions);
    }

    #[test]
    fn a_bad_line_is_named() {
        let err = View::parse("# ok\nredact nothing-to-replace\n").unwrap_err();
        assert!(err.starts_with("line 2: expected `redact"), "{err}");
        let err = View::parse("census run_id\n").unwrap_err();
        assert!(err.starts_with("line 1: expected id-family"), "{err}");
    }
}
