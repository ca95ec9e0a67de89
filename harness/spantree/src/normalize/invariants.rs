//! Collecting the received spans with their decoded ids, and the structural invariants
//! (ids, duplicates, open spans, orphans, trace count) checked before anything is built.

use super::*;

// ---------------------------------------------------------------------------------------------
// Collection and structural invariants

/// One received span with its decoded ids.
pub(super) struct Raw<'a> {
    pub(super) span: &'a OtlpSpan,
    pub(super) service: &'a str,
    pub(super) resource: Option<&'a Resource>,
    pub(super) scope: Option<&'a InstrumentationScope>,
    pub(super) trace: String,
    pub(super) id: String,
    pub(super) parent: Option<String>,
}

impl Raw<'_> {
    pub(super) fn describe(&self) -> String {
        format!("{} {:?} (span {})", self.service, self.span.name, self.id)
    }
}

pub(super) fn collect<'a>(
    resource_spans: impl IntoIterator<Item = &'a opentelemetry_proto::tonic::trace::v1::ResourceSpans>,
) -> Vec<Raw<'a>> {
    let mut raws = Vec::new();
    for rs in resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.as_str()),
                _ => None,
            })
            .unwrap_or("unknown_service");
        for (scope, span) in rs
            .scope_spans
            .iter()
            .flat_map(|ss| ss.spans.iter().map(move |span| (ss.scope.as_ref(), span)))
        {
            let parent = (!span.parent_span_id.is_empty()
                && span.parent_span_id.iter().any(|b| *b != 0))
            .then(|| hex(&span.parent_span_id));
            raws.push(Raw {
                span,
                service,
                resource: rs.resource.as_ref(),
                scope,
                trace: hex(&span.trace_id),
                id: hex(&span.span_id),
                parent,
            });
        }
    }
    raws
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn check_structure(raws: &[Raw<'_>], options: &Options) -> Result<(), TreeError> {
    let mut malformed: Vec<String> = raws
        .iter()
        .filter_map(|r| {
            let s = r.span;
            let bad_trace = s.trace_id.len() != 16 || s.trace_id.iter().all(|b| *b == 0);
            let bad_span = s.span_id.len() != 8 || s.span_id.iter().all(|b| *b == 0);
            let bad_parent = !s.parent_span_id.is_empty() && s.parent_span_id.len() != 8;
            (bad_trace || bad_span || bad_parent).then(|| {
                format!(
                    "{} {:?}: trace id {:?}, span id {:?}, parent span id {:?}",
                    r.service,
                    s.name,
                    r.trace,
                    r.id,
                    hex(&s.parent_span_id)
                )
            })
        })
        .collect();
    if !malformed.is_empty() {
        malformed.sort();
        return Err(TreeError::MalformedSpans(malformed));
    }

    let mut by_id: BTreeMap<&str, Vec<&Raw<'_>>> = BTreeMap::new();
    for r in raws {
        by_id.entry(&r.id).or_default().push(r);
    }
    let duplicates: Vec<String> = by_id
        .iter()
        .filter(|(_, rs)| rs.len() > 1)
        .map(|(id, rs)| {
            let who: Vec<String> = rs
                .iter()
                .map(|r| format!("{} {:?} in trace {}", r.service, r.span.name, r.trace))
                .collect();
            format!("span {id} arrived {} times: {}", rs.len(), who.join("; "))
        })
        .collect();
    if !duplicates.is_empty() {
        return Err(TreeError::DuplicateSpanIds(duplicates));
    }

    let mut open: Vec<String> = raws
        .iter()
        .filter(|r| {
            r.span.end_time_unix_nano == 0
                || r.span.end_time_unix_nano < r.span.start_time_unix_nano
        })
        .map(|r| {
            format!(
                "{} in trace {}: start {} ns, end {} ns",
                r.describe(),
                r.trace,
                r.span.start_time_unix_nano,
                r.span.end_time_unix_nano
            )
        })
        .collect();
    if !open.is_empty() {
        open.sort();
        return Err(TreeError::OpenSpans(open));
    }

    let traces = group_by_trace(raws);
    let known: HashSet<(&str, &str)> = raws
        .iter()
        .map(|r| (r.trace.as_str(), r.id.as_str()))
        .collect();
    let mut orphans: Vec<String> = raws
        .iter()
        .filter_map(|r| {
            let parent = r.parent.as_deref()?;
            if known.contains(&(r.trace.as_str(), parent)) {
                return None;
            }
            let elsewhere = raws
                .iter()
                .find(|o| o.id == parent)
                .map(|o| format!(" (a span with that id is in trace {})", o.trace))
                .unwrap_or_default();
            Some(format!(
                "{} has parent span {parent}, which never arrived{elsewhere}; trace {} holds: {}",
                r.describe(),
                r.trace,
                list_spans(raws, &traces[r.trace.as_str()])
            ))
        })
        .collect();
    if !orphans.is_empty() {
        orphans.sort();
        return Err(TreeError::OrphanSpans(orphans));
    }

    if let Some(expected) = options.expected_traces
        && expected != traces.len()
    {
        return Err(TreeError::TraceCount {
            expected,
            actual: traces.len(),
            traces: traces
                .iter()
                .map(|(trace, members)| format!("trace {trace}: {}", list_spans(raws, members)))
                .collect(),
        });
    }
    Ok(())
}

pub(super) fn group_by_trace<'r>(raws: &'r [Raw<'_>]) -> BTreeMap<&'r str, Vec<usize>> {
    let mut traces: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in raws.iter().enumerate() {
        traces.entry(&r.trace).or_default().push(i);
    }
    traces
}

/// `metis-api "POST /runs" (span …), …` in start-time order, for error messages.
pub(super) fn list_spans(raws: &[Raw<'_>], members: &[usize]) -> String {
    let mut members = members.to_vec();
    members.sort_by_key(|&i| (raws[i].span.start_time_unix_nano, raws[i].id.clone()));
    members
        .iter()
        .map(|&i| raws[i].describe())
        .collect::<Vec<_>>()
        .join(", ")
}
