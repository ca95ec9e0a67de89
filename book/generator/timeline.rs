//! The span waterfall: a snapshot drawn as an inline SVG, one row per span.
//!
//! Snapshots are normalised — they carry no timestamps or durations — so the drawing shows
//! **structure, not time**: the x axis counts steps in the order the tree is rendered (one
//! step per span start and per event, plus one empty step where a message crosses to another
//! service). A span's bar runs from its own step to the last step of its same-service subtree,
//! so a parent encloses its in-process children; a span of another service (the engine's
//! `workflow_run` under the API's `publish`) starts after its cause ends and is joined to it
//! by a dashed arrow — the message crossing NATS. Rows are
//! indented by depth, coloured by service, events are diamonds on their span's row (hover for
//! the event line), error spans are outlined in red, and the kind (`server`, `producer`, …) is
//! written on the right.
//!
//! The output is a single HTML block without blank lines (so Markdown passes it through
//! untouched), deterministic for a given snapshot, and uses `currentColor` for text so it
//! reads in every mdBook theme. Elements carry classes (`metis-timeline`, `span-bar`,
//! `span-event`) that the browser test looks for.

use std::fmt::Write as _;

use crate::snapshot::{Snapshot, Span};

const WIDTH: f64 = 760.0;
const LABEL_W: f64 = 250.0;
const BARS_X: f64 = 258.0;
const BARS_W: f64 = 424.0;
const KIND_X: f64 = 692.0;
const ROW_H: f64 = 22.0;
const BAR_H: f64 = 14.0;
const INDENT: f64 = 12.0;
const CHAR_W: f64 = 6.6;
const HEADER_H: f64 = 22.0;
const TRACE_GAP: f64 = 12.0;
const LEGEND_H: f64 = 28.0;

/// Colours of the known services; other services take the next free colour of [`PALETTE`]
/// in order of first appearance.
pub(crate) const KNOWN: [(&str, &str); 2] = [
    ("metis-api", "#4e79a7"),
    ("metis-engine-generic", "#f28e2b"),
];
const PALETTE: [&str; 4] = ["#59a14f", "#b07aa1", "#76b7b2", "#edc948"];
const ERROR: &str = "#d62728";

/// One laid-out span.
struct Row<'a> {
    span: &'a Span,
    depth: usize,
    start: usize,
    end: usize,
    /// Row index of the parent when it belongs to another service (a message crossing).
    crossing_from: Option<usize>,
    /// Step of each event.
    event_steps: Vec<usize>,
}

/// Lays a trace out: rows in depth-first order and the number of steps.
fn layout(roots: &[Span]) -> (Vec<Row<'_>>, usize) {
    fn visit<'a>(
        span: &'a Span,
        depth: usize,
        parent: Option<(usize, &str)>,
        step: &mut usize,
        rows: &mut Vec<Row<'a>>,
    ) -> usize {
        let index = rows.len();
        let start = *step;
        *step += 1;
        let event_steps: Vec<usize> = span
            .events
            .iter()
            .map(|_| {
                *step += 1;
                *step - 1
            })
            .collect();
        let crossing_from = parent.and_then(|(i, svc)| (svc != span.service).then_some(i));
        rows.push(Row {
            span,
            depth,
            start,
            end: *step,
            crossing_from,
            event_steps,
        });
        let mut end = *step;
        for child in &span.children {
            if child.service != span.service {
                // A gap for the message in flight between the services.
                *step += 1;
            }
            let child_end = visit(child, depth + 1, Some((index, &span.service)), step, rows);
            if child.service == span.service {
                end = end.max(child_end);
            }
        }
        rows[index].end = end;
        end
    }
    let mut rows = Vec::new();
    let mut step = 0;
    for root in roots {
        visit(root, 0, None, &mut step, &mut rows);
    }
    (rows, step.max(1))
}

/// `s` escaped for HTML text and attribute values.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The colour of each service in `snapshot`, in order of first appearance.
fn colours(snapshot: &Snapshot) -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> = Vec::new();
    let mut next = 0;
    for t in &snapshot.traces {
        for r in &t.roots {
            r.walk(0, &mut |s, _| {
                if out.iter().any(|(n, _)| *n == s.service) {
                    return;
                }
                let colour = KNOWN.iter().find(|(n, _)| *n == s.service).map_or_else(
                    || {
                        let c = PALETTE[next % PALETTE.len()];
                        next += 1;
                        c
                    },
                    |(_, c)| *c,
                );
                out.push((s.service.clone(), colour));
            });
        }
    }
    out
}

fn attrs_text(span: &Span) -> String {
    span.attrs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Renders the timeline of `snapshot` as an HTML `<figure>` holding one SVG.
#[must_use]
pub fn render(snapshot: &Snapshot) -> String {
    let colours = colours(snapshot);
    let colour_of = |svc: &str| {
        colours
            .iter()
            .find(|(n, _)| n == svc)
            .map_or(PALETTE[0], |(_, c)| *c)
    };
    let traces: Vec<_> = snapshot
        .traces
        .iter()
        .map(|t| (t, layout(&t.roots)))
        .collect();
    let height = LEGEND_H
        + traces
            .iter()
            .map(|(_, (rows, _))| HEADER_H + ROW_H * rows.len() as f64 + TRACE_GAP)
            .sum::<f64>();
    let name = esc(&snapshot.name);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<figure class="metis-timeline" id="timeline-{name}" data-scenario="{name}" style="margin:1em 0">"#
    );
    svg.push('\n');
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="100%" role="img" aria-label="span timeline of scenario {name}" font-family="ui-monospace, SFMono-Regular, Menlo, Consolas, monospace" font-size="11">"#
    );
    svg.push('\n');
    // Legend.
    let mut x = 0.0;
    for (svc, colour) in &colours {
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="6" width="14" height="12" rx="2" fill="{colour}"></rect><text x="{}" y="16" fill="currentColor">{}</text>"#,
            x + 18.0,
            esc(svc)
        );
        x += 18.0 + CHAR_W * svc.len() as f64 + 18.0;
    }
    let _ = writeln!(
        svg,
        r#"<path d="M {} 12 l 5 -5 l 5 5 l -5 5 z" fill="white" stroke="currentColor"></path><text x="{}" y="16" fill="currentColor">event</text>"#,
        x,
        x + 14.0
    );
    x += 14.0 + CHAR_W * 5.0 + 18.0;
    let _ = writeln!(
        svg,
        r#"<line x1="{x}" y1="12" x2="{}" y2="12" stroke="currentColor" stroke-dasharray="3 2"></line><text x="{}" y="16" fill="currentColor">message over NATS</text>"#,
        x + 22.0,
        x + 28.0
    );
    let mut y = LEGEND_H;
    for (trace, (rows, steps)) in &traces {
        let unit = BARS_W / *steps as f64;
        let _ = writeln!(
            svg,
            r#"<text x="0" y="{}" fill="currentColor" font-weight="bold">{}</text><line x1="{BARS_X}" y1="{}" x2="{}" y2="{}" stroke="currentColor" stroke-opacity="0.25"></line>"#,
            y + 15.0,
            esc(&trace.header),
            y + 11.0,
            BARS_X + BARS_W,
            y + 11.0
        );
        y += HEADER_H;
        let top = y;
        for (i, row) in rows.iter().enumerate() {
            let ry = top + ROW_H * i as f64;
            let span = row.span;
            let indent = INDENT * row.depth as f64;
            let room = ((LABEL_W - indent) / CHAR_W).floor() as usize;
            let label = if span.name.chars().count() > room {
                let cut: String = span.name.chars().take(room.saturating_sub(1)).collect();
                format!("{cut}…")
            } else {
                span.name.clone()
            };
            let colour = colour_of(&span.service);
            let bx = BARS_X + unit * row.start as f64;
            let bw = (unit * (row.end - row.start) as f64).max(3.0);
            let (stroke, stroke_w) = if span.is_error() {
                (ERROR, 2.0)
            } else {
                ("none", 0.0)
            };
            let tooltip = esc(&format!(
                "{}  {}{}{}  {}",
                span.service,
                span.name,
                span.kind
                    .as_ref()
                    .map(|k| format!("  [{k}]"))
                    .unwrap_or_default(),
                span.status
                    .as_ref()
                    .map(|s| format!("  {s}"))
                    .unwrap_or_default(),
                attrs_text(span)
            ));
            let _ = writeln!(
                svg,
                r#"<g class="span-row"><title>{tooltip}</title><text x="{}" y="{}" fill="currentColor">{}</text><rect class="span-bar" data-span="{}" data-service="{}" x="{bx:.1}" y="{}" width="{bw:.1}" height="{BAR_H}" rx="3" fill="{colour}" fill-opacity="0.85" stroke="{stroke}" stroke-width="{stroke_w}"></rect>"#,
                indent,
                ry + 15.0,
                esc(&label),
                esc(&span.name),
                esc(&span.service),
                ry + 4.0,
            );
            if span.is_error() {
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.1}" y="{}" fill="{ERROR}" font-weight="bold">!</text>"#,
                    bx + bw + 4.0,
                    ry + 15.0
                );
            }
            for (event, step) in span.events.iter().zip(&row.event_steps) {
                let cx = BARS_X + unit * (*step as f64 + 0.5);
                let cy = ry + 4.0 + BAR_H / 2.0;
                let line = esc(&format!(
                    "event {}{}{}",
                    event.level.as_deref().unwrap_or(""),
                    event
                        .message
                        .as_ref()
                        .map(|m| format!(" {m}"))
                        .unwrap_or_default(),
                    event
                        .attrs
                        .iter()
                        .map(|(k, v)| format!(" {k}={v}"))
                        .collect::<String>()
                ));
                let fill = if event.level.as_deref() == Some("ERROR") {
                    ERROR
                } else {
                    "white"
                };
                let _ = writeln!(
                    svg,
                    r##"<path class="span-event" d="M {:.1} {cy} l 4 -4 l 4 4 l -4 4 z" fill="{fill}" stroke="#333"><title>{line}</title></path>"##,
                    cx - 4.0
                );
            }
            if let Some(kind) = &span.kind {
                let _ = writeln!(
                    svg,
                    r#"<text x="{KIND_X}" y="{}" fill="currentColor" fill-opacity="0.7">{}</text>"#,
                    ry + 15.0,
                    esc(kind)
                );
            }
            svg.push_str("</g>\n");
            if let Some(from) = row.crossing_from {
                let parent = &rows[from];
                let px = BARS_X + unit * parent.end as f64;
                let py = top + ROW_H * from as f64 + 4.0 + BAR_H / 2.0;
                let cy = ry + 4.0 + BAR_H / 2.0;
                let _ = writeln!(
                    svg,
                    r#"<path class="span-crossing" d="M {px:.1} {py} C {:.1} {py}, {:.1} {cy}, {:.1} {cy}" fill="none" stroke="currentColor" stroke-dasharray="3 2"></path><path d="M {:.1} {cy} l -5 -3 l 0 6 z" fill="currentColor"></path>"#,
                    px + 10.0,
                    bx - 10.0,
                    bx - 1.0,
                    bx - 0.5
                );
            }
        }
        y += ROW_H * rows.len() as f64 + TRACE_GAP;
    }
    svg.push_str("</svg>\n");
    let _ = write!(
        svg,
        r#"<figcaption style="font-size:0.85em;opacity:0.8">Structure, not time: drawn from the normalised snapshot <code>{name}.snap</code>, which has no timestamps. The x axis counts span starts and events in rendered order; a bar spans its in-process children; a dashed arrow is a message crossing NATS to another service.</figcaption>"#
    );
    svg.push_str("\n</figure>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        Snapshot::parse(
            "demo",
            r#"---
x: y
---
trace#1
metis-api  POST /runs  [server]  a=1
└─ create_run  run_id=[run#1]
   ├─ event INFO "Run <created>"
   └─ publish x  [producer]
      └─ metis-engine-generic  workflow_run  [consumer]  !ERROR  state=EXECUTOR_ERROR
         ├─ event INFO phase state=initializing
         └─ event INFO phase state=cleanup
"#,
        )
        .unwrap()
    }

    #[test]
    fn layout_encloses_in_process_children_and_starts_consumers_after_their_cause() {
        let s = snap();
        let (rows, steps) = layout(&s.traces[0].roots);
        let spans: Vec<_> = rows
            .iter()
            .map(|r| (r.span.name.as_str(), r.depth, r.start, r.end))
            .collect();
        assert_eq!(
            spans,
            [
                ("POST /runs", 0, 0, 4),
                ("create_run", 1, 1, 4),
                ("publish x", 2, 3, 4),
                ("workflow_run", 3, 5, 8),
            ]
        );
        assert_eq!(steps, 8, "one gap step for the message crossing NATS");
        assert_eq!(rows[3].crossing_from, Some(2));
        assert_eq!(rows[3].event_steps, [6, 7]);
    }

    #[test]
    fn renders_one_bar_per_span_and_one_diamond_per_event_without_blank_lines() {
        let html = render(&snap());
        assert_eq!(html.matches(r#"class="span-bar""#).count(), 4);
        assert_eq!(html.matches(r#"class="span-event""#).count(), 3);
        assert_eq!(html.matches(r#"class="span-crossing""#).count(), 1);
        assert!(html.contains("Run &lt;created&gt;"), "escaped: {html}");
        assert!(html.contains(ERROR), "the error span is outlined");
        assert!(
            !html.contains("\n\n"),
            "a blank line would end the HTML block"
        );
        assert!(html.starts_with("<figure") && html.ends_with("</figure>"));
    }

    #[test]
    fn rendering_is_deterministic() {
        assert_eq!(render(&snap()), render(&snap()));
    }
}
