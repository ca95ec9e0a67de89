//! Recorded timings: the spans a scenario's last run exported, drawn to scale.
//!
//! `{{#recording NAME}}` reads `spans.json` from the scenario's artefact folder
//! (`target/e2e/NAME/`, or `$METIS_BOOK_RECORDINGS/NAME/`), which the harness writes on every
//! run, and draws one waterfall per trace: a bar per span from its true start to its true end,
//! on an axis in milliseconds from the trace's first start, rows in tree order (children under
//! their parent, by start time), coloured by service. Each bar carries a `<title>` — the
//! span's service, name, kind, duration and attributes — which browsers show on hover; nothing
//! runs scripts. The caption says when and on which backend the recording was made (the
//! file's modification time; the backend from `timeline.txt`).
//!
//! Timings differ between runs, so this is never part of a committed page: the directive is
//! expanded at build time, and without a recording it says how to make one. Successful
//! read-only polls (`GET`s without children) are left out, as in the snapshots
//! ([`spantree::without_read_only_requests`]); a scenario with many traces shows the first
//! [`MAX_TRACES`] by start time and says how many it left out.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::timeline::esc;
use spantree::otlp::common::v1::any_value::Value as V;
use spantree::otlp::trace::v1::Span as OtlpSpan;

/// At most this many traces are drawn.
pub const MAX_TRACES: usize = 6;

const WIDTH: f64 = 760.0;
const LABEL_W: f64 = 270.0;
const BARS_X: f64 = 276.0;
const BARS_W: f64 = 400.0;
const ROW_H: f64 = 20.0;
const BAR_H: f64 = 12.0;
const INDENT: f64 = 10.0;
const AXIS_H: f64 = 20.0;

const OTHER: &str = "#59a14f";

/// One span of a recording, with what the drawing needs.
struct Bar<'a> {
    span: &'a OtlpSpan,
    service: &'a str,
}

fn value(v: Option<&V>) -> String {
    match v {
        Some(V::StringValue(s)) => s.clone(),
        Some(V::IntValue(i)) => i.to_string(),
        Some(V::DoubleValue(d)) => d.to_string(),
        Some(V::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn kind(k: i32) -> &'static str {
    match k {
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "internal",
    }
}

/// `YYYY-MM-DD HH:MM UTC` of a system time (the civil-from-days algorithm).
fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The backend named on the first line of `timeline.txt` (`backend local: …`).
fn backend(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("timeline.txt")).ok()?;
    let line = text.lines().find(|l| l.contains("backend "))?;
    let after = line.split("backend ").nth(1)?;
    Some(after.split(':').next()?.trim().to_owned())
}

/// The directive's output for the artefact folder `dir` of scenario `name`.
pub fn render(dir: &Path, name: &str) -> Result<String> {
    let path = dir.join("spans.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(format!(
            "<p class=\"metis-recording-missing\"><em>No recording of <code>{name}</code> in \
             this build: the timings are drawn from <code>target/e2e/{name}/spans.json</code>, which \
             a run of the scenario leaves (<code>just test-e2e</code>, then <code>just book</code>).</em></p>"
        ));
    };
    let data = spantree::dump::parse(&path.display().to_string(), &text)
        .with_context(|| format!("reading the recording {}", path.display()))?;
    let data = spantree::without_read_only_requests(&data);
    let when = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .map_or_else(|_| "an unknown date".to_owned(), utc);
    let backend = backend(dir).unwrap_or_else(|| "an unknown backend".to_owned());

    let mut traces: HashMap<&[u8], Vec<Bar<'_>>> = HashMap::new();
    for rs in &data.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                V::StringValue(s) => Some(s.as_str()),
                _ => None,
            })
            .unwrap_or("unknown_service");
        for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
            traces
                .entry(span.trace_id.as_slice())
                .or_default()
                .push(Bar { span, service });
        }
    }
    let mut traces: Vec<Vec<Bar<'_>>> = traces.into_values().collect();
    let start_of = |t: &[Bar<'_>]| t.iter().map(|b| b.span.start_time_unix_nano).min();
    traces.sort_by_key(|t| start_of(t));
    let total = traces.len();
    let mut out = String::new();
    let _ = write!(
        out,
        "<figure class=\"metis-recording\"><figcaption>Recorded on {when}, {backend} backend: \
         {total} trace(s), true start and end times (blue: metis-api, orange: the engine); hover over a bar for its attributes.</figcaption>"
    );
    for (n, trace) in traces.iter().take(MAX_TRACES).enumerate() {
        out.push_str(&waterfall(n + 1, trace));
    }
    if total > MAX_TRACES {
        let _ = write!(
            out,
            "<p><em>{} more trace(s) of this recording are not drawn.</em></p>",
            total - MAX_TRACES
        );
    }
    out.push_str("</figure>");
    Ok(out)
}

/// The rows of one trace in tree order: roots (and spans whose parent is missing) by start
/// time, each followed by its children by start time. Returns (bar, depth).
fn rows<'b, 'a>(trace: &'b [Bar<'a>]) -> Vec<(&'b Bar<'a>, usize)> {
    let ids: std::collections::HashSet<&[u8]> =
        trace.iter().map(|b| b.span.span_id.as_slice()).collect();
    let mut children: HashMap<&[u8], Vec<&Bar<'a>>> = HashMap::new();
    let mut roots = Vec::new();
    for b in trace {
        let parent = b.span.parent_span_id.as_slice();
        if parent.is_empty() || !ids.contains(parent) {
            roots.push(b);
        } else {
            children.entry(parent).or_default().push(b);
        }
    }
    let by_start = |v: &mut Vec<&Bar<'a>>| v.sort_by_key(|b| b.span.start_time_unix_nano);
    by_start(&mut roots);
    for v in children.values_mut() {
        by_start(v);
    }
    fn visit<'b, 'a>(
        b: &'b Bar<'a>,
        depth: usize,
        children: &HashMap<&[u8], Vec<&'b Bar<'a>>>,
        out: &mut Vec<(&'b Bar<'a>, usize)>,
    ) {
        out.push((b, depth));
        for c in children
            .get(b.span.span_id.as_slice())
            .into_iter()
            .flatten()
        {
            visit(c, depth + 1, children, out);
        }
    }
    let mut out = Vec::new();
    for r in roots {
        visit(r, 0, &children, &mut out);
    }
    out
}

fn waterfall(n: usize, trace: &[Bar<'_>]) -> String {
    let rows = rows(trace);
    let t0 = trace
        .iter()
        .map(|b| b.span.start_time_unix_nano)
        .min()
        .unwrap_or(0);
    let t1 = trace
        .iter()
        .map(|b| b.span.end_time_unix_nano)
        .max()
        .unwrap_or(t0)
        .max(t0 + 1);
    let span_ms = (t1 - t0) as f64 / 1e6;
    let x = |t: u64| BARS_X + (t.saturating_sub(t0)) as f64 / (t1 - t0) as f64 * BARS_W;
    let height = AXIS_H + rows.len() as f64 * ROW_H + 6.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"metis-recording-trace\" role=\"img\" aria-label=\"trace {n} to scale, {span_ms:.1} ms\" viewBox=\"0 0 {WIDTH} {height}\" width=\"100%\" style=\"max-width:{WIDTH}px;font:11px sans-serif\">"
    );
    let _ = write!(
        svg,
        "<text x=\"0\" y=\"13\" fill=\"currentColor\" font-weight=\"bold\">trace {n} — {span_ms:.1} ms</text>"
    );
    for i in 0..=4 {
        let fx = BARS_X + f64::from(i) / 4.0 * BARS_W;
        let label = span_ms * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            "<line x1=\"{fx:.1}\" y1=\"{AXIS_H}\" x2=\"{fx:.1}\" y2=\"{:.1}\" stroke=\"currentColor\" stroke-opacity=\"0.15\"/><text x=\"{fx:.1}\" y=\"13\" fill=\"currentColor\" text-anchor=\"middle\" opacity=\"0.7\">{label:.1} ms</text>",
            height - 4.0
        );
    }
    for (row, (bar, depth)) in rows.iter().enumerate() {
        let s = bar.span;
        let y = AXIS_H + row as f64 * ROW_H;
        let colour = crate::timeline::KNOWN
            .iter()
            .find(|(svc, _)| *svc == bar.service)
            .map_or(OTHER, |(_, c)| c);
        let x0 = x(s.start_time_unix_nano);
        let w = (x(s.end_time_unix_nano) - x0).max(1.5);
        let ms = s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano) as f64 / 1e6;
        let error = s.status.as_ref().is_some_and(|st| st.code == 2);
        let mut title = format!(
            "{} {} [{}] — {ms:.3} ms, from +{:.3} ms",
            bar.service,
            s.name,
            kind(s.kind),
            (s.start_time_unix_nano.saturating_sub(t0)) as f64 / 1e6
        );
        let mut attrs: Vec<String> = s
            .attributes
            .iter()
            .filter(|kv| !kv.key.starts_with("code.") && !kv.key.starts_with("thread."))
            .map(|kv| {
                format!(
                    "{}={}",
                    kv.key,
                    value(kv.value.as_ref().and_then(|v| v.value.as_ref()))
                )
            })
            .collect();
        attrs.sort();
        for a in attrs {
            title.push('\n');
            title.push_str(&a);
        }
        let label = &s.name;
        let lx = f64::from(u32::try_from(*depth).unwrap_or(0)) * INDENT;
        let _ = write!(
            svg,
            "<g class=\"recording-bar\"><title>{}</title><text x=\"{lx:.1}\" y=\"{:.1}\" fill=\"currentColor\">{}</text><rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{BAR_H}\" rx=\"2\" fill=\"{colour}\"{}/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"currentColor\" opacity=\"0.8\">{ms:.1} ms</text></g>",
            esc(&title),
            y + 13.0,
            esc(&truncate(label, ((LABEL_W - lx) / 6.2) as usize)),
            y + 3.0,
            if error {
                " stroke=\"#d62728\" stroke-width=\"2\""
            } else {
                ""
            },
            (x0 + w + 4.0).min(WIDTH - 40.0),
            y + 13.0,
        );
    }
    svg.push_str("</svg>");
    svg
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00 UTC");
        assert_eq!(
            utc(UNIX_EPOCH + std::time::Duration::from_secs(1_796_129_400)),
            "2026-12-01 12:50 UTC"
        );
    }

    #[test]
    fn without_a_recording_it_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let html = render(dir.path(), "demo").unwrap();
        assert!(html.contains("No recording of <code>demo</code>"), "{html}");
    }

    #[test]
    fn draws_every_span_to_scale_with_its_attributes_on_hover() {
        let dir = tempfile::tempdir().unwrap();
        let span = |id: u8, parent: Option<u8>, name: &str, start: u64, end: u64| {
            serde_json::json!({
                "traceId": "0af7651916cd43dd8448eb211c80319c",
                "spanId": format!("00000000000000{id:02x}"),
                "parentSpanId": parent.map(|p| format!("00000000000000{p:02x}")).unwrap_or_default(),
                "name": name, "kind": 1,
                "startTimeUnixNano": (1_700_000_000_000_000_000_u64 + start * 1_000_000).to_string(),
                "endTimeUnixNano": (1_700_000_000_000_000_000_u64 + end * 1_000_000).to_string(),
                "attributes": [{"key": "run_id", "value": {"stringValue": "r<1>"}}],
            })
        };
        let data = serde_json::json!({"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "metis-api"}}]},
            "scopeSpans": [{"spans": [
                span(1, None, "create_run", 0, 40),
                span(2, Some(1), "publish", 30, 40),
            ]}]
        }]});
        std::fs::write(dir.path().join("spans.json"), data.to_string()).unwrap();
        std::fs::write(
            dir.path().join("timeline.txt"),
            "[  0.000s] backend local: E2E_BACKEND=local\n",
        )
        .unwrap();
        let html = render(dir.path(), "demo").unwrap();
        assert!(html.contains(", local backend: 1 trace(s)"), "{html}");
        assert!(html.contains("trace 1 — 40.0 ms"), "{html}");
        assert_eq!(html.matches("class=\"recording-bar\"").count(), 2, "{html}");
        // publish starts at 30 of 40 ms: three quarters along the bar area.
        assert!(
            html.contains(&format!("<rect x=\"{:.1}\"", BARS_X + 0.75 * BARS_W)),
            "{html}"
        );
        assert!(html.contains("run_id=r&lt;1&gt;"), "{html}");
        assert!(!html.contains("<script"), "{html}");
    }
}
