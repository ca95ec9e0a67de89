//! Recorded timings: the spans a scenario's last run exported, drawn to scale.
//!
//! `{{#recording NAME}}` reads `spans.json` from the scenario's artefact folder
//! (`target/e2e/NAME/`, or `$METIS_BOOK_RECORDINGS/NAME/`), which the harness writes on every
//! run, and draws one waterfall per trace, **all on one axis**: milliseconds from the first
//! span's start, so traces of one scenario compare at a glance. A bar per span from its true
//! start to its true end, rows in tree order (children under their parent, by start time),
//! coloured by service. The harness's own actions (its `faults` trace, service `e2e-harness`,
//! see `harness::fault_trace`) are not a waterfall of their own: each is a dashed line across
//! every trace at the moment it struck, named at the top. Each bar carries a `<title>` — the
//! span's service, name, kind, duration and attributes, ids shortened to `[id#N]` — which
//! browsers show on hover; nothing runs scripts. The caption says when and on which backend
//! the recording was made (the file's modification time; the backend from `timeline.txt`).
//!
//! Timings differ between runs, so this is never part of a committed page: the directive is
//! expanded at build time, and without a recording it says how to make one. Successful
//! read-only polls (`GET`s without children) are left out, as in the snapshots
//! ([`spantree::without_read_only_requests`]); a scenario with many traces shows the first
//! [`MAX_TRACES`] by start time and says how many of how many it shows.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::timeline::esc;
use spantree::otlp::common::v1::any_value::Value as V;
use spantree::otlp::trace::v1::Span as OtlpSpan;

/// At most this many traces are drawn.
pub const MAX_TRACES: usize = 8;

/// The service of the harness's own spans (`harness::fault_trace::HARNESS_SERVICE`).
const HARNESS: &str = "e2e-harness";

const WIDTH: f64 = 900.0;
const LABEL_W: f64 = 300.0;
const BARS_X: f64 = 306.0;
const BARS_W: f64 = 520.0;
const ROW_H: f64 = 22.0;
const BAR_H: f64 = 13.0;
const INDENT: f64 = 10.0;
const AXIS_H: f64 = 22.0;
/// The type size of the drawing, in px (the page's body text is 16 px).
const FONT: f64 = 13.0;

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
    // The harness's own trace becomes markers: one per action, at the moment it struck.
    let (harness, traces): (Vec<Vec<Bar<'_>>>, Vec<Vec<Bar<'_>>>) =
        traces.into_iter().partition(|t| {
            t.iter()
                .any(|b| b.span.parent_span_id.is_empty() && b.service == HARNESS)
        });
    let markers: Vec<Marker> = harness
        .iter()
        .flatten()
        .filter(|b| !b.span.parent_span_id.is_empty())
        .map(|b| Marker {
            name: b.span.name.clone(),
            at: b.span.start_time_unix_nano,
        })
        .collect();
    let total = traces.len();
    let drawn = &traces[..total.min(MAX_TRACES)];
    let t0 = drawn
        .iter()
        .flatten()
        .map(|b| b.span.start_time_unix_nano)
        .chain(markers.iter().map(|m| m.at))
        .min()
        .unwrap_or(0);
    let t1 = drawn
        .iter()
        .flatten()
        .map(|b| b.span.end_time_unix_nano)
        .chain(markers.iter().map(|m| m.at))
        .max()
        .unwrap_or(t0)
        .max(t0 + 1);
    let axis = Axis { t0, t1 };
    let mut ids = Ids::default();
    let mut out = String::new();
    let shown = if total > MAX_TRACES {
        format!("the first {MAX_TRACES} of {total} traces (by start)")
    } else {
        format!("{total} trace(s)")
    };
    let faults = if markers.is_empty() {
        String::new()
    } else {
        format!(
            "; dashed lines: the harness's actions ({})",
            markers
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let _ = write!(
        out,
        "<figure class=\"metis-recording\"><figcaption>Recorded on {when}, {backend} backend: \
         {shown}, true start and end times on one axis of {:.1} ms (blue: metis-api, orange: the \
         engine){}; hover over a bar for its attributes.</figcaption>",
        (t1 - t0) as f64 / 1e6,
        esc(&faults)
    );
    for (n, trace) in drawn.iter().enumerate() {
        out.push_str(&waterfall(n + 1, trace, &axis, &markers, &mut ids));
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

/// The axis all traces of a recording share: nanoseconds since the epoch.
struct Axis {
    t0: u64,
    t1: u64,
}

impl Axis {
    fn x(&self, t: u64) -> f64 {
        BARS_X + (t.saturating_sub(self.t0)) as f64 / (self.t1 - self.t0) as f64 * BARS_W
    }

    fn ms(&self, t: u64) -> f64 {
        t.saturating_sub(self.t0) as f64 / 1e6
    }
}

/// One action of the harness, drawn across every trace.
struct Marker {
    name: String,
    at: u64,
}

/// Ids shortened for a reader: every UUID or 32/16-hex id reads `[id#N]`, numbered by first
/// appearance over the whole recording.
#[derive(Default)]
struct Ids(Vec<String>);

impl Ids {
    fn shorten(&mut self, text: &str) -> String {
        static ID: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
            regex::Regex::new(
                r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\b[0-9a-f]{32}\b|\b[0-9a-f]{16}\b",
            )
            .expect("static regex")
        });
        ID.replace_all(text, |c: &regex::Captures<'_>| {
            let id = c[0].to_owned();
            let n = match self.0.iter().position(|x| *x == id) {
                Some(i) => i + 1,
                None => {
                    self.0.push(id);
                    self.0.len()
                }
            };
            format!("[id#{n}]")
        })
        .into_owned()
    }
}

fn waterfall(
    n: usize,
    trace: &[Bar<'_>],
    axis: &Axis,
    markers: &[Marker],
    ids: &mut Ids,
) -> String {
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
    let x = |t: u64| axis.x(t);
    let height = AXIS_H + rows.len() as f64 * ROW_H + 6.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"metis-recording-trace\" role=\"img\" aria-label=\"trace {n} to scale, {span_ms:.1} ms\" viewBox=\"0 0 {WIDTH} {height}\" width=\"100%\" style=\"max-width:{WIDTH}px;font:{FONT}px sans-serif\">"
    );
    let _ = write!(
        svg,
        "<text x=\"0\" y=\"15\" fill=\"currentColor\" font-weight=\"bold\">trace {n} — {span_ms:.1} ms, from +{:.1} ms</text>",
        axis.ms(t0)
    );
    let whole_ms = axis.ms(axis.t1);
    for i in 0..=4 {
        let fx = BARS_X + f64::from(i) / 4.0 * BARS_W;
        let label = whole_ms * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            "<line x1=\"{fx:.1}\" y1=\"{AXIS_H}\" x2=\"{fx:.1}\" y2=\"{:.1}\" stroke=\"currentColor\" stroke-opacity=\"0.15\"/><text x=\"{fx:.1}\" y=\"15\" fill=\"currentColor\" text-anchor=\"middle\" opacity=\"0.7\">{label:.0} ms</text>",
            height - 4.0
        );
    }
    for m in markers {
        let mx = x(m.at);
        let _ = write!(
            svg,
            "<line class=\"recording-fault\" x1=\"{mx:.1}\" y1=\"{AXIS_H}\" x2=\"{mx:.1}\" y2=\"{:.1}\" stroke=\"#d62728\" stroke-dasharray=\"4 3\"><title>{} at +{:.1} ms</title></line>",
            height - 4.0,
            esc(&m.name),
            axis.ms(m.at)
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
            axis.ms(s.start_time_unix_nano)
        );
        let mut attrs: Vec<String> = s
            .attributes
            .iter()
            .filter(|kv| !kv.key.starts_with("code.") && !kv.key.starts_with("thread."))
            .map(|kv| {
                format!(
                    "{}={}",
                    kv.key,
                    ids.shorten(&value(kv.value.as_ref().and_then(|v| v.value.as_ref())))
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
            y + 15.0,
            esc(&truncate(
                &ids.shorten(label),
                ((LABEL_W - lx) / (FONT * 0.55)) as usize
            )),
            y + 4.0,
            if error {
                " stroke=\"#d62728\" stroke-width=\"2\""
            } else {
                ""
            },
            (x0 + w + 4.0).min(WIDTH - 50.0),
            y + 15.0,
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
        assert!(html.contains("trace 1 — 40.0 ms, from +0.0 ms"), "{html}");
        assert_eq!(html.matches("class=\"recording-bar\"").count(), 2, "{html}");
        // publish starts at 30 of 40 ms: three quarters along the bar area.
        assert!(
            html.contains(&format!("<rect x=\"{:.1}\"", BARS_X + 0.75 * BARS_W)),
            "{html}"
        );
        assert!(html.contains("run_id=r&lt;1&gt;"), "{html}");
        assert!(!html.contains("<script"), "{html}");
    }

    /// Two traces share one axis; the harness's trace is no waterfall but a dashed line across
    /// both at the moment its action struck; ids read `[id#N]`.
    #[test]
    fn traces_share_one_axis_and_faults_are_marked() {
        let dir = tempfile::tempdir().unwrap();
        let span = |trace: u8, id: u8, parent: Option<u8>, name: &str, start: u64, end: u64| {
            serde_json::json!({
                "traceId": format!("0af7651916cd43dd8448eb211c8031{trace:02x}"),
                "spanId": format!("00000000000000{id:02x}"),
                "parentSpanId": parent.map(|p| format!("00000000000000{p:02x}")).unwrap_or_default(),
                "name": name, "kind": 1,
                "startTimeUnixNano": (1_700_000_000_000_000_000_u64 + start * 1_000_000).to_string(),
                "endTimeUnixNano": (1_700_000_000_000_000_000_u64 + end * 1_000_000).to_string(),
                "attributes": [{"key": "engine_id", "value": {"stringValue": "0190c4c2-6d44-7a8b-9a55-4b2f6e0c8a11"}}],
            })
        };
        let resource = |service: &str, spans: Vec<serde_json::Value>| {
            serde_json::json!({
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeSpans": [{"spans": spans}]
            })
        };
        let data = serde_json::json!({"resourceSpans": [
            resource("metis-api", vec![
                span(1, 1, None, "first", 0, 100),
                span(2, 2, None, "second", 100, 200),
            ]),
            resource("e2e-harness", vec![
                span(3, 3, None, "faults", 50, 60),
                span(3, 4, Some(3), "kill engine", 50, 60),
            ]),
        ]});
        std::fs::write(dir.path().join("spans.json"), data.to_string()).unwrap();
        let html = render(dir.path(), "demo").unwrap();
        assert!(
            html.contains("2 trace(s)"),
            "the harness's trace is no waterfall: {html}"
        );
        assert!(html.contains("one axis of 200.0 ms"), "{html}");
        // The second trace starts half-way along the shared axis.
        assert!(
            html.contains(&format!("<rect x=\"{:.1}\"", BARS_X + 0.5 * BARS_W)),
            "{html}"
        );
        assert_eq!(
            html.matches("class=\"recording-fault\"").count(),
            2,
            "{html}"
        );
        assert!(html.contains("kill engine at +50.0 ms"), "{html}");
        assert!(html.contains("engine_id=[id#1]"), "{html}");
        assert!(!html.contains("0190c4c2"), "{html}");
    }
}
