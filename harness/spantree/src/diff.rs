//! A tree-aware diff of two rendered forests (the text [`SpanForest::render`] writes, as in a
//! snapshot), read through [`crate::parse`]. Traces are paired by identity — equal traces,
//! then the most similar trace with the same root spans — never by position, so removing one
//! trace is one `removed`, not a cascade. Inside a pair every line is placed by its path from
//! the root (`trace#1 › metis-api POST /runs › create_run`), and the changes are lines
//! changed in place (an attribute, a status), spans moved under another parent (a broken
//! parent link), and subtrees added or removed — each reported once, at its top. Detail lines
//! (events, links) belong to their span and never "move". The legend (resources and scopes)
//! is compared entry by entry at `legend › KEY`.
//!
//! [`SpanForest::render`]: crate::SpanForest::render

use std::collections::BTreeMap;
use std::fmt;

use crate::model::{SpanNode, Trace};
use crate::parse::ParseError;
use crate::render::{self, Legend};

/// One difference between two forests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A line only the new forest has, at `path` — with the `below` lines under it that are
    /// new with it (a whole new trace is one `Added` at its header).
    Added {
        /// Where, from the root.
        path: String,
        /// The new line.
        line: String,
        /// How many lines under it are new with it.
        below: usize,
    },
    /// A line only the old forest has, with the `below` lines under it that went with it.
    Removed {
        /// Where it was.
        path: String,
        /// The old line.
        line: String,
        /// How many lines under it went with it.
        below: usize,
    },
    /// The same span line under another parent of the same trace (a parent link changed).
    Moved {
        /// Where it was.
        from: String,
        /// Where it is now.
        to: String,
        /// The line.
        line: String,
    },
    /// Same place, different content (attributes, status, kind).
    Changed {
        /// Where.
        path: String,
        /// Before.
        old: String,
        /// After.
        new: String,
    },
}

fn under(below: usize) -> String {
    match below {
        0 => String::new(),
        1 => " (and the line under it)".to_owned(),
        n => format!(" (and the {n} lines under it)"),
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Added { path, line, below } => {
                write!(f, "added    {path}{}\n  + {line}", under(*below))
            }
            Self::Removed { path, line, below } => {
                write!(f, "removed  {path}{}\n  - {line}", under(*below))
            }
            Self::Moved { from, to, line } => {
                write!(f, "moved    {from}\n      to {to}\n    {line}")
            }
            Self::Changed { path, old, new } => {
                write!(f, "changed  {path}\n  - {old}\n  + {new}")
            }
        }
    }
}

/// One line of a trace, placed in its tree.
struct Placed {
    /// Path within the trace: the labels from the root, each with an occurrence number among
    /// siblings of the same label (`#2`) when it is not the first.
    path: String,
    /// The path of the span the line hangs under (`None` for a root).
    parent: Option<String>,
    /// The line without connectors.
    content: String,
    /// Whether it is a span line (only spans can move).
    span: bool,
}

/// The lines of one trace, in render order.
fn place(trace: &Trace, legend: &Legend) -> Vec<Placed> {
    fn visit(
        node: &SpanNode,
        parent: Option<(&str, &str)>,
        legend: &Legend,
        seen: &mut BTreeMap<String, usize>,
        out: &mut Vec<Placed>,
    ) {
        let parent_service = parent.map(|(_, service)| service);
        let label = if parent_service == Some(node.service()) {
            node.name().to_owned()
        } else {
            format!("{} {}", node.service(), node.name())
        };
        let path = numbered(parent.map(|(p, _)| p), &label, seen);
        out.push(Placed {
            path: path.clone(),
            parent: parent.map(|(p, _)| p.to_owned()),
            content: render::span_line(node, parent_service, legend),
            span: true,
        });
        for line in render::body_lines(node) {
            let label = detail_label(&line);
            out.push(Placed {
                path: numbered(Some(&path), &label, seen),
                parent: Some(path.clone()),
                content: line,
                span: false,
            });
        }
        for child in node.children() {
            visit(child, Some((&path, node.service())), legend, seen, out);
        }
    }
    let mut seen = BTreeMap::new();
    let mut out = Vec::new();
    for root in trace.roots() {
        visit(root, None, legend, &mut seen, &mut out);
    }
    out
}

/// The legend's changes: an entry whose resource or scope differs is `Changed` at
/// `legend › KEY` (one entry per line), a key only one side has is `Added`/`Removed`.
fn compare_legends(old: &Legend, new: &Legend) -> Vec<Change> {
    let lines = |e: &render::LegendEntry| render::entry_lines(&e.entry);
    let mut changes = Vec::new();
    for n in &new.entries {
        let path = format!("legend › {}", n.key);
        match old.entries.iter().find(|o| o.key == n.key) {
            Some(o) => {
                let (before, after) = (lines(o), lines(n));
                for i in 0..before.len().max(after.len()) {
                    match (before.get(i), after.get(i)) {
                        (Some(b), Some(a)) if a == b => {}
                        (Some(b), Some(a)) => changes.push(Change::Changed {
                            path: path.clone(),
                            old: b.clone(),
                            new: a.clone(),
                        }),
                        (None, Some(a)) => changes.push(Change::Added {
                            path: path.clone(),
                            line: a.clone(),
                            below: 0,
                        }),
                        (Some(b), None) => changes.push(Change::Removed {
                            path: path.clone(),
                            line: b.clone(),
                            below: 0,
                        }),
                        (None, None) => {}
                    }
                }
            }
            None => changes.push(Change::Added {
                path,
                line: n.key.clone(),
                below: lines(n).len(),
            }),
        }
    }
    for o in &old.entries {
        if !new.entries.iter().any(|n| n.key == o.key) {
            changes.push(Change::Removed {
                path: format!("legend › {}", o.key),
                line: o.key.clone(),
                below: lines(o).len(),
            });
        }
    }
    changes
}

/// `parent › label`, with `#N` when `label` occurred before under the same parent.
fn numbered(parent: Option<&str>, label: &str, seen: &mut BTreeMap<String, usize>) -> String {
    let base = match parent {
        Some(p) => format!("{p} › {label}"),
        None => label.to_owned(),
    };
    let n = seen.entry(base.clone()).or_insert(0);
    *n += 1;
    if *n == 1 {
        base
    } else {
        format!("{base} #{n}")
    }
}

/// What names a detail line: `event LEVEL message` for an event; `link`, `resource`, `scope`.
fn detail_label(content: &str) -> String {
    if let Some(rest) = content.strip_prefix("event") {
        let words: Vec<&str> = rest
            .split(' ')
            .filter(|w| !w.is_empty())
            .take_while(|w| !w.contains('='))
            .collect();
        return format!("event {}", words.join(" ")).trim_end().to_owned();
    }
    content.split(' ').next().unwrap_or(content).to_owned()
}

/// The identity of a trace for pairing: its roots' services and names.
fn identity(lines: &[Placed]) -> Vec<&str> {
    lines
        .iter()
        .filter(|p| p.parent.is_none())
        .map(|p| p.path.as_str())
        .collect()
}

/// How many lines two traces share (same place, same content).
fn similarity(a: &[Placed], b: &[Placed]) -> usize {
    let at: BTreeMap<&str, &str> = a
        .iter()
        .map(|p| (p.path.as_str(), p.content.as_str()))
        .collect();
    b.iter()
        .filter(|p| at.get(p.path.as_str()) == Some(&p.content.as_str()))
        .count()
}

/// The changes from `old` to `new` (both rendered trees, as in a snapshot body). Traces are
/// paired by identity, not position: equal traces first, then — among traces with the same
/// root spans — the most similar. A trace only one side has is one `Added` or `Removed` at
/// its header; inside a pair, lines are placed by their path from the root, so a change is
/// `Changed` in place, a span under another parent is `Moved`, and a new or gone subtree is
/// one entry at its top. Empty when the trees are the same.
pub fn diff(old: &str, new: &str) -> Result<Vec<Change>, ParseError> {
    let old = crate::parse(old)?;
    let new = crate::parse(new)?;
    let (old_legend, new_legend) = (old.legend(), new.legend());
    let old: Vec<(String, Vec<Placed>)> = old
        .traces()
        .into_iter()
        .map(|(h, t)| (h, place(t, &old_legend)))
        .collect();
    let new: Vec<(String, Vec<Placed>)> = new
        .traces()
        .into_iter()
        .map(|(h, t)| (h, place(t, &new_legend)))
        .collect();
    let text = |lines: &[Placed]| -> Vec<(String, String)> {
        lines
            .iter()
            .map(|p| (p.path.clone(), p.content.clone()))
            .collect()
    };
    // Pairing: new index → old index.
    let mut taken = vec![false; old.len()];
    let mut pair: Vec<Option<usize>> = vec![None; new.len()];
    for (n, (_, lines)) in new.iter().enumerate() {
        if let Some(o) = (0..old.len()).find(|&o| !taken[o] && text(&old[o].1) == text(lines)) {
            taken[o] = true;
            pair[n] = Some(o);
        }
    }
    for (n, (_, lines)) in new.iter().enumerate() {
        if pair[n].is_some() {
            continue;
        }
        let best = (0..old.len())
            .filter(|&o| !taken[o] && identity(&old[o].1) == identity(lines))
            .max_by_key(|&o| (similarity(&old[o].1, lines), std::cmp::Reverse(o)));
        if let Some(o) = best {
            taken[o] = true;
            pair[n] = Some(o);
        }
    }
    let mut changes = compare_legends(&old_legend, &new_legend);
    for (n, (header, lines)) in new.iter().enumerate() {
        match pair[n] {
            Some(o) => changes.extend(compare(header, &old[o].1, lines)),
            None => changes.push(Change::Added {
                path: header.clone(),
                line: lines.first().map(|p| p.content.clone()).unwrap_or_default(),
                below: lines.len().saturating_sub(1),
            }),
        }
    }
    for (o, (header, lines)) in old.iter().enumerate() {
        if !taken[o] {
            changes.push(Change::Removed {
                path: header.clone(),
                line: lines.first().map(|p| p.content.clone()).unwrap_or_default(),
                below: lines.len().saturating_sub(1),
            });
        }
    }
    Ok(changes)
}

/// The changes as text, one per paragraph (what `spantree diff` prints and the review
/// shows), or why a side could not be read.
#[must_use]
pub fn diff_text(old: &str, new: &str) -> String {
    match diff(old, new) {
        Ok(changes) => changes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("the trees cannot be compared: {e}"),
    }
}

/// The changes inside one pair of traces; paths shown under the new trace's header.
fn compare(header: &str, old: &[Placed], new: &[Placed]) -> Vec<Change> {
    let show = |path: &str| format!("{header} › {path}");
    let old_at: BTreeMap<&str, &Placed> = old.iter().map(|p| (p.path.as_str(), p)).collect();
    let new_at: BTreeMap<&str, &Placed> = new.iter().map(|p| (p.path.as_str(), p)).collect();
    let mut removed: Vec<&Placed> = old
        .iter()
        .filter(|p| !new_at.contains_key(p.path.as_str()))
        .collect();
    let mut changes = Vec::new();
    // Paths whose line is reported as added or moved: their subtrees are not reported again.
    let mut covered: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    let mut added_at: BTreeMap<&str, usize> = BTreeMap::new();
    let mut moved_from: Vec<String> = Vec::new();
    for p in new {
        if let Some(parent) = p.parent.as_deref()
            && covered.contains(parent)
        {
            covered.insert(&p.path);
            // Count it towards the added line above it, if that is what covers it.
            let mut at = parent;
            while !added_at.contains_key(at) {
                match new_at.get(at).and_then(|q| q.parent.as_deref()) {
                    Some(up) => at = up,
                    None => break,
                }
            }
            if let Some(&i) = added_at.get(at)
                && let Some(Change::Added { below, .. }) = changes.get_mut(i)
            {
                *below += 1;
            }
            continue;
        }
        match old_at.get(p.path.as_str()) {
            Some(before) if before.content == p.content => {}
            Some(before) => changes.push(Change::Changed {
                path: show(&p.path),
                old: before.content.clone(),
                new: p.content.clone(),
            }),
            None => {
                let moved = p
                    .span
                    .then(|| {
                        removed
                            .iter()
                            .position(|r| r.span && r.content == p.content)
                    })
                    .flatten();
                if let Some(i) = moved {
                    let from = removed.remove(i);
                    moved_from.push(format!("{} › ", from.path));
                    changes.push(Change::Moved {
                        from: show(&from.path),
                        to: show(&p.path),
                        line: p.content.clone(),
                    });
                } else {
                    added_at.insert(&p.path, changes.len());
                    changes.push(Change::Added {
                        path: show(&p.path),
                        line: p.content.clone(),
                        below: 0,
                    });
                }
                covered.insert(&p.path);
            }
        }
    }
    // What is gone: one entry per gone subtree (a moved span's old place is not gone).
    let gone: std::collections::BTreeSet<&str> = removed.iter().map(|r| r.path.as_str()).collect();
    for r in &removed {
        if r.parent.as_deref().is_some_and(|p| gone.contains(p))
            || moved_from.iter().any(|m| r.path.starts_with(m.as_str()))
        {
            continue;
        }
        let prefix = format!("{} › ", r.path);
        let below = removed
            .iter()
            .filter(|q| q.path.starts_with(&prefix))
            .count();
        changes.push(Change::Removed {
            path: show(&r.path),
            line: r.content.clone(),
            below,
        });
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "trace#1
metis-api  POST /runs  [server]  http.response.status_code=200
└─ create_run  run_id=[run#1] user_id=alice
   ├─ event INFO \"Run created\" run_id=[run#1]
   └─ publish x  [producer]
      └─ metis-engine-generic  workflow_run  [consumer]  state=COMPLETE
         ├─ event INFO phase state=initializing
         └─ event INFO phase state=running
";

    const CANCEL: &str = "trace#2
metis-api  POST /runs/{run_id}/cancel  [server]  http.response.status_code=200
└─ request_cancel  run_id=[run#1]
";

    fn both(a: &str, b: &str) -> String {
        format!("{a}\n{b}")
    }

    #[test]
    fn same_tree_no_changes() {
        assert!(diff(OLD, OLD).unwrap().is_empty());
    }

    #[test]
    fn an_attribute_changed_in_place() {
        let new = OLD.replace("state=COMPLETE", "state=EXECUTOR_ERROR");
        let changes = diff(OLD, &new).unwrap();
        assert_eq!(changes.len(), 1, "{changes:#?}");
        let Change::Changed { path, old, new } = &changes[0] else {
            panic!("{changes:#?}")
        };
        assert_eq!(
            path,
            "trace#1 › metis-api POST /runs › create_run › publish x › metis-engine-generic workflow_run"
        );
        assert!(old.ends_with("state=COMPLETE") && new.ends_with("state=EXECUTOR_ERROR"));
    }

    #[test]
    fn a_moved_span_an_added_span_and_a_gone_event() {
        // The engine's span hangs under create_run instead of publish (a broken parent link);
        // a span is added; an event goes; an event changes span (removed there, added here).
        let new = "trace#1
metis-api  POST /runs  [server]  http.response.status_code=200
└─ create_run  run_id=[run#1] user_id=alice
   ├─ publish x  [producer]
   │  └─ event INFO \"Run created\" run_id=[run#1]
   ├─ metis-engine-generic  workflow_run  [consumer]  state=COMPLETE
   │  └─ event INFO phase state=initializing
   └─ persist
";
        let changes = diff(OLD, new).unwrap();
        let text: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert!(
            changes.iter().any(|c| matches!(c, Change::Moved { from, to, .. }
                if from == "trace#1 › metis-api POST /runs › create_run › publish x › metis-engine-generic workflow_run"
                && to == "trace#1 › metis-api POST /runs › create_run › metis-engine-generic workflow_run")),
            "{text:#?}"
        );
        assert!(
            changes
                .iter()
                .any(|c| matches!(c, Change::Added { path, .. }
                if path == "trace#1 › metis-api POST /runs › create_run › persist")),
            "{text:#?}"
        );
        assert!(
            changes.iter().any(|c| matches!(c, Change::Added { path, .. }
                if path == "trace#1 › metis-api POST /runs › create_run › publish x › event INFO \"Run created\"")),
            "{text:#?}"
        );
        // The moved span's gone event is reported, its kept event is not.
        assert!(
            !changes
                .iter()
                .any(|c| matches!(c, Change::Moved { line, .. } if line.starts_with("event"))),
            "{text:#?}"
        );
        assert_eq!(changes.len(), 4, "{text:#?}");
    }

    #[test]
    fn a_removed_trace_is_one_entry_and_the_rest_pair_by_identity() {
        // The cancel trace goes; the run trace, now trace#1 of one, still pairs with itself.
        let changes = diff(&both(OLD, CANCEL), OLD).unwrap();
        assert_eq!(changes.len(), 1, "{changes:#?}");
        assert!(
            matches!(&changes[0], Change::Removed { path, below: 1, .. } if path == "trace#2"),
            "{changes:#?}"
        );
        // Added in front: the old trace#1 is now trace#2, and nothing else is reported.
        let first = CANCEL.replace("trace#2", "trace#1");
        let second = OLD.replace("trace#1", "trace#2");
        let changes = diff(OLD, &both(&first, &second)).unwrap();
        assert_eq!(changes.len(), 1, "{changes:#?}");
        assert!(
            matches!(&changes[0], Change::Added { path, below: 1, .. } if path == "trace#1"),
            "{changes:#?}"
        );
    }

    #[test]
    fn a_new_subtree_is_one_entry_at_its_top() {
        let new = OLD.replace(
            "   └─ publish x  [producer]\n",
            "   ├─ persist\n   │  ├─ event INFO saved\n   │  └─ write\n   └─ publish x  [producer]\n",
        );
        let changes = diff(OLD, &new).unwrap();
        assert_eq!(changes.len(), 1, "{changes:#?}");
        assert!(
            matches!(&changes[0], Change::Added { line, below: 2, .. } if line == "persist"),
            "{changes:#?}"
        );
        let back = diff(&new, OLD).unwrap();
        assert!(
            matches!(back.as_slice(), [Change::Removed { below: 2, .. }]),
            "{back:#?}"
        );
    }

    #[test]
    fn traces_of_the_same_root_pair_with_the_most_similar() {
        // Two runs, both `POST /runs`; the second one's state changes. Pairing by position
        // would work here too — so swap them in the new text: still one change.
        let a = OLD.to_owned();
        let b = OLD
            .replace("trace#1", "trace#2")
            .replace("user_id=alice", "user_id=bob");
        let new_b = b.replace("state=COMPLETE", "state=CANCELED");
        let swapped = both(
            &new_b.replace("trace#2", "trace#1"),
            &a.replace("trace#1", "trace#2"),
        );
        let changes = diff(&both(&a, &b), &swapped).unwrap();
        assert_eq!(changes.len(), 1, "{changes:#?}");
        assert!(
            matches!(&changes[0], Change::Changed { new, .. } if new.ends_with("state=CANCELED"))
        );
    }

    #[test]
    fn labels() {
        assert_eq!(
            detail_label("event INFO phase state=running"),
            "event INFO phase"
        );
        assert_eq!(detail_label("link →create_run kind=x"), "link");
        assert_eq!(detail_label("resource a=1"), "resource");
    }
}
