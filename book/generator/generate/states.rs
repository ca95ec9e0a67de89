//! The run-state diagram and tables, from the code: the states are `common::model::State::ALL`,
//! an arrow is drawn for every pair `State::can_transition` allows (it is called, not read),
//! terminal states are `State::is_terminal`, and each state's meaning is its variant's doc
//! comment in `crates/common/src/model.rs` (parsed with `syn`). Change a transition and the
//! committed page is stale, so `just book-check` fails until it is regenerated.
//!
//! The drawing is an inline SVG: the states that can still move in a column, in order of
//! their longest path from the first state; the terminal states in a second column, the happy
//! path's end (`COMPLETE`) first. Arrows between neighbours of the first column are straight,
//! arrows that skip a state bend to the left. Moves into terminal states are **grouped**: the
//! states with the same set of terminal targets share one bus (a vertical line between the
//! columns) — a line from each of them into the bus, an arrow from the bus into each target —
//! so 15 moves read as two bundles instead of 15 crossing curves; each bus lists its moves in
//! `data-moves` and in its `<title>`. The happy path (`QUEUED` → `INITIALIZING` → `RUNNING` →
//! `COMPLETE`) is drawn bold, its states filled. A table lists the same transitions.

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use common::model::State;

use super::preamble;
use crate::Workspace;
use crate::timeline::esc;

const BOX_W: f64 = 150.0;
const BOX_H: f64 = 30.0;
const LEFT_X: f64 = 90.0;
const RIGHT_X: f64 = 520.0;
const ROW: f64 = 62.0;
const TOP: f64 = 20.0;
/// Where the first bus runs, and how far apart buses are.
const BUS_X: f64 = 330.0;
const BUS_GAP: f64 = 40.0;
const HAPPY: [State; 4] = [
    State::Queued,
    State::Initializing,
    State::Running,
    State::Complete,
];

/// Whether `a` → `b` is a move of the happy path.
fn happy(a: State, b: State) -> bool {
    HAPPY.windows(2).any(|w| w[0] == a && w[1] == b)
}

/// The moves into terminal states, grouped by source states that share the same set of
/// targets: (sources, targets), the biggest group first.
pub(crate) fn terminal_groups(moves: &[(State, State)]) -> Vec<(Vec<State>, Vec<State>)> {
    let mut groups: Vec<(Vec<State>, Vec<State>)> = Vec::new();
    for a in State::ALL {
        let targets: Vec<State> = moves
            .iter()
            .filter(|(x, b)| *x == a && b.is_terminal())
            .map(|(_, b)| *b)
            .collect();
        if targets.is_empty() {
            continue;
        }
        match groups.iter_mut().find(|(_, t)| *t == targets) {
            Some((sources, _)) => sources.push(a),
            None => groups.push((vec![a], targets)),
        }
    }
    groups.sort_by_key(|(s, t)| std::cmp::Reverse(s.len() * t.len()));
    groups
}

/// The allowed moves, in `State::ALL` order.
pub(crate) fn transitions() -> Vec<(State, State)> {
    State::ALL
        .iter()
        .flat_map(|&a| State::ALL.iter().map(move |&b| (a, b)))
        .filter(|&(a, b)| a.can_transition(b))
        .collect()
}

/// The doc comment of each variant of `enum State` in `model.rs`, by variant name.
fn meanings(model_rs: &str) -> Result<Vec<(String, String)>> {
    let file = syn::parse_file(model_rs).context("parsing crates/common/src/model.rs")?;
    for item in &file.items {
        if let syn::Item::Enum(e) = item
            && e.ident == "State"
        {
            return Ok(e
                .variants
                .iter()
                .map(|v| (v.ident.to_string(), super::engine_yaml::docs(&v.attrs)))
                .collect());
        }
    }
    bail!("no `enum State` in crates/common/src/model.rs")
}

/// The variant name of a state (`ExecutorError` for `EXECUTOR_ERROR`).
fn variant(s: State) -> String {
    s.as_str()
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next().map_or_else(String::new, |f| {
                f.to_string() + &c.as_str().to_ascii_lowercase()
            })
        })
        .collect()
}

/// Generates `states.md`.
pub fn generate(ws: &Workspace) -> Result<(String, Vec<String>)> {
    let model_path = ws.root.join("crates/common/src/model.rs");
    let model = std::fs::read_to_string(&model_path)
        .with_context(|| format!("reading {}", model_path.display()))?;
    let meanings = meanings(&model)?;
    let mut problems = Vec::new();
    let moves = transitions();
    let first = State::Queued;

    // Ranks of the states that can still move: the longest path from `first`.
    let moving: Vec<State> = State::ALL
        .iter()
        .copied()
        .filter(|s| !s.is_terminal() && moves.iter().any(|(a, b)| a == s || b == s))
        .collect();
    let mut rank: Vec<(State, usize)> = vec![(first, 0)];
    for _ in 0..State::ALL.len() {
        for &(a, b) in &moves {
            if b.is_terminal() {
                continue;
            }
            let Some(ra) = rank.iter().find(|(s, _)| *s == a).map(|(_, r)| *r) else {
                continue;
            };
            match rank.iter_mut().find(|(s, _)| *s == b) {
                Some((_, rb)) if *rb < ra + 1 => *rb = ra + 1,
                Some(_) => {}
                None => rank.push((b, ra + 1)),
            }
        }
    }
    if rank.iter().any(|(_, r)| *r >= State::ALL.len()) {
        problems.push(
            "the non-terminal transitions form a cycle; the diagram cannot rank them".to_owned(),
        );
    }
    for s in &moving {
        if !rank.iter().any(|(r, _)| r == s) {
            problems.push(format!(
                "{} cannot be reached from {}",
                s.as_str(),
                first.as_str()
            ));
        }
    }
    rank.sort_by_key(|(s, r)| (*r, State::ALL.iter().position(|x| x == s)));
    let terminals: Vec<State> = State::ALL
        .iter()
        .copied()
        .filter(|s| s.is_terminal() && moves.iter().any(|(_, b)| b == s))
        .collect();
    let never: Vec<State> = State::ALL
        .iter()
        .copied()
        .filter(|s| !moves.iter().any(|(a, b)| a == s || b == s))
        .collect();

    let left_y = |i: usize| TOP + i as f64 * ROW * 1.25;
    // Offset from the left column, so that no line into a bus runs on from an arrow out of
    // another one at the same height.
    let right_y = |i: usize| TOP + 16.0 + i as f64 * ROW;
    let pos = |s: State| -> (f64, f64, bool) {
        if let Some(i) = rank.iter().position(|(r, _)| *r == s) {
            (LEFT_X, left_y(i), false)
        } else {
            let i = terminals.iter().position(|t| *t == s).unwrap_or(0);
            (RIGHT_X, right_y(i), true)
        }
    };
    let height = (left_y(rank.len().saturating_sub(1)))
        .max(right_y(terminals.len().saturating_sub(1)))
        + BOX_H
        + TOP;
    let width = RIGHT_X + BOX_W + 10.0;
    let palette = [
        "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#9c755f",
    ];
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"metis-states\" role=\"img\" aria-label=\"run state diagram\" viewBox=\"0 0 {width} {height:.0}\" width=\"100%\" style=\"max-width:{width}px;font:12px sans-serif\">\
         <defs>{}</defs>",
        palette
            .iter()
            .enumerate()
            .map(|(i, c)| format!(
                "<marker id=\"metis-arrow-{i}\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0,0L10,5L0,10z\" fill=\"{c}\"/></marker>"
            ))
            .collect::<String>()
    );
    // Moves between states that can still move: straight down to the next, bent to the left
    // past one.
    for &(a, b) in moves.iter().filter(|(_, b)| !b.is_terminal()) {
        let colour_i = rank.iter().position(|(s, _)| *s == a).unwrap_or(0) % palette.len();
        let colour = palette[colour_i];
        let (ax, ay, _) = pos(a);
        let (bx, by, _) = pos(b);
        let d = if (by - ay - ROW * 1.25).abs() < 1.0 {
            let x = ax + BOX_W / 2.0;
            format!("M{x:.1},{:.1} L{x:.1},{by:.1}", ay + BOX_H)
        } else {
            let (x1, y1) = (ax, ay + BOX_H / 2.0);
            let (x2, y2) = (bx, by + BOX_H / 2.0);
            let bend = 30.0 + (by - ay) / 6.0;
            format!(
                "M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}",
                x1 - bend,
                x2 - bend
            )
        };
        let _ = write!(
            svg,
            "<path class=\"state-move\" data-moves=\"{a} → {b}\" d=\"{d}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"{}\" marker-end=\"url(#metis-arrow-{colour_i})\"><title>{a} → {b}</title></path>",
            if happy(a, b) { 3.0 } else { 1.4 },
            a = a.as_str(),
            b = b.as_str()
        );
    }
    // Moves into terminal states, one bus per group of sources with the same targets.
    for (g, (sources, targets)) in terminal_groups(&moves).iter().enumerate() {
        let colour_i = (rank.len() + g) % palette.len();
        let colour = palette[colour_i];
        let bus_x = BUS_X + g as f64 * BUS_GAP;
        let listed: Vec<String> = sources
            .iter()
            .flat_map(|a| {
                targets
                    .iter()
                    .map(move |b| format!("{} → {}", a.as_str(), b.as_str()))
            })
            .collect();
        let ys: Vec<f64> = sources
            .iter()
            .chain(targets)
            .map(|s| pos(*s).1 + BOX_H / 2.0)
            .collect();
        let (top, bottom) = (
            ys.iter().copied().fold(f64::INFINITY, f64::min),
            ys.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        );
        let _ = write!(
            svg,
            "<g class=\"state-moves\" data-moves=\"{}\"><title>{}</title>\
             <path d=\"M{bus_x:.1},{top:.1} L{bus_x:.1},{bottom:.1}\" stroke=\"{colour}\" stroke-width=\"2\"/>",
            listed.join(", "),
            listed.join(", ")
        );
        for a in sources {
            let (ax, ay, _) = pos(*a);
            let y = ay + BOX_H / 2.0;
            let bold = targets.iter().any(|b| happy(*a, *b));
            let _ = write!(
                svg,
                "<path d=\"M{:.1},{y:.1} L{bus_x:.1},{y:.1}\" stroke=\"{colour}\" stroke-width=\"{}\"/><circle cx=\"{bus_x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{colour}\"/>",
                ax + BOX_W,
                if bold { 3.0 } else { 1.4 }
            );
        }
        for b in targets {
            let (bx, by, _) = pos(*b);
            let y = by + BOX_H / 2.0;
            let bold = sources.iter().any(|a| happy(*a, *b));
            let _ = write!(
                svg,
                "<circle cx=\"{bus_x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{colour}\"/><path d=\"M{bus_x:.1},{y:.1} L{bx:.1},{y:.1}\" stroke=\"{colour}\" stroke-width=\"{}\" marker-end=\"url(#metis-arrow-{colour_i})\"/>",
                if bold { 3.0 } else { 1.4 }
            );
        }
        svg.push_str("</g>");
    }
    for s in rank
        .iter()
        .map(|(s, _)| *s)
        .chain(terminals.iter().copied())
    {
        let (x, y, terminal) = pos(s);
        let meaning = meanings
            .iter()
            .find(|(v, _)| *v == variant(s))
            .map(|(_, m)| m.as_str())
            .unwrap_or_default();
        let _ = write!(
            svg,
            "<g class=\"state\"><title>{}: {}</title><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{BOX_W}\" height=\"{BOX_H}\" rx=\"{}\" fill=\"{}\" fill-opacity=\"0.15\" stroke=\"currentColor\" stroke-width=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"currentColor\" text-anchor=\"middle\">{}</text></g>",
            s.as_str(),
            esc(meaning),
            if terminal { 14 } else { 3 },
            if HAPPY.contains(&s) {
                "#59a14f"
            } else {
                "none"
            },
            if terminal { 2 } else { 1 },
            x + BOX_W / 2.0,
            y + BOX_H / 2.0 + 4.0,
            s.as_str()
        );
    }
    svg.push_str("</svg>");

    let mut md = preamble(
        "states",
        "`State::ALL`, `State::can_transition` and `State::is_terminal` (called) and the doc comments of `enum State` in crates/common/src/model.rs",
    );
    md.push_str("\n<figure class=\"metis-states-figure\">\n");
    md.push_str(&svg);
    md.push_str("\n<figcaption>Every move <code>State::can_transition</code> allows. Left: states a run can still leave, top to bottom in the order a run passes them; right: terminal states (rounded, bold). The happy path (<code>QUEUED</code> → <code>INITIALIZING</code> → <code>RUNNING</code> → <code>COMPLETE</code>) is bold and filled; moves into terminal states are bundled: each state that joins a bus can end in every state the bus points to. Hover over a state or a bundle for its name and moves.</figcaption>\n</figure>\n\n");
    md.push_str("| from | to |\n| --- | --- |\n");
    for s in State::ALL {
        let to: Vec<String> = moves
            .iter()
            .filter(|(a, _)| *a == s)
            .map(|(_, b)| format!("`{}`", b.as_str()))
            .collect();
        if !to.is_empty() {
            md.push_str(&format!("| `{}` | {} |\n", s.as_str(), to.join(", ")));
        }
    }
    md.push_str("\nWhat each state means (the variant's doc comment):\n\n| state | terminal | meaning |\n| --- | --- | --- |\n");
    for s in State::ALL {
        let meaning = meanings
            .iter()
            .find(|(v, _)| *v == variant(s))
            .map(|(_, m)| m.clone());
        match meaning {
            Some(m) if !m.is_empty() => md.push_str(&format!(
                "| `{}` | {} | {} |\n",
                s.as_str(),
                if s.is_terminal() { "yes" } else { "no" },
                super::cell(&m)
            )),
            _ => problems.push(format!(
                "State::{} has no doc comment in crates/common/src/model.rs",
                variant(s)
            )),
        }
    }
    if !never.is_empty() {
        md.push_str(&format!(
            "\nNo transition enters or leaves {}: the states exist because WES names them.\n",
            never
                .iter()
                .map(|s| format!("`{}`", s.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // Into each terminal state: where the table lets a run end (the lifecycle page's prose
    // says which of them Metis's code actually takes, and names no edge itself).
    md.push_str("\nInto each terminal state, from:\n\n");
    for t in State::ALL.iter().filter(|s| s.is_terminal()) {
        let from: Vec<String> = moves
            .iter()
            .filter(|(_, b)| b == t)
            .map(|(a, _)| format!("`{}`", a.as_str()))
            .collect();
        md.push_str(&format!(
            "- `{}` ← {}\n",
            t.as_str(),
            if from.is_empty() {
                "no state".to_owned()
            } else {
                from.join(", ")
            }
        ));
    }
    Ok((md, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_allowed_move_is_drawn_and_listed() {
        let (md, problems) = generate(&Workspace::locate()).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let drawn = drawn_moves(&md);
        for (a, b) in transitions() {
            let m = format!("{} → {}", a.as_str(), b.as_str());
            assert!(drawn.contains(&m), "{m} not drawn: {drawn:?}");
        }
        assert_eq!(drawn.len(), transitions().len(), "{drawn:?}");
        // Grouped: two bundles into the terminal states, not one curve per move.
        assert_eq!(md.matches("class=\"state-moves\"").count(), 2, "{md}");
        assert!(
            md.contains("| `QUEUED` | `INITIALIZING`, `SYSTEM_ERROR`, `CANCELED` |"),
            "{md}"
        );
    }

    /// Every move the diagram draws, from its `data-moves` attributes.
    fn drawn_moves(md: &str) -> Vec<String> {
        md.split("data-moves=\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .flat_map(|list| list.split(", ").map(str::to_owned))
            .collect()
    }

    #[test]
    fn variant_names() {
        assert_eq!(variant(State::ExecutorError), "ExecutorError");
        assert_eq!(variant(State::Queued), "Queued");
    }
}
