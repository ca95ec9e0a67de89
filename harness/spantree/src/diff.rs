//! A tree-aware diff of two rendered forests (the text [`SpanForest::render`] writes, as in a
//! snapshot): every line is placed by its path from the root (`trace#1 › metis-api POST /runs
//! › create_run`), and the changes are spans (or events, links) added, removed, moved to
//! another place, or changed in place (an attribute, a status) — not a line diff that
//! renumbers everything after the first difference.
//!
//! [`SpanForest::render`]: crate::SpanForest::render

use std::collections::BTreeMap;
use std::fmt;

/// One difference between two forests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A line only the new forest has, at `path`.
    Added {
        /// Where, from the root.
        path: String,
        /// The new line.
        line: String,
    },
    /// A line only the old forest has.
    Removed {
        /// Where it was.
        path: String,
        /// The old line.
        line: String,
    },
    /// The same line at another place.
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

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Added { path, line } => write!(f, "added    {path}\n  + {line}"),
            Self::Removed { path, line } => write!(f, "removed  {path}\n  - {line}"),
            Self::Moved { from, to, line } => {
                write!(f, "moved    {from}\n      to {to}\n    {line}")
            }
            Self::Changed { path, old, new } => {
                write!(f, "changed  {path}\n  - {old}\n  + {new}")
            }
        }
    }
}

/// One line of a rendered forest, placed in the tree.
struct Placed {
    /// Path of the parent plus this line's label, with an occurrence number among siblings
    /// of the same label (`#2`) when it is not the first.
    path: String,
    /// The content without connectors.
    content: String,
}

/// The part of a line that names it: for a span its service (when shown) and name; for an
/// event its level and message; for a link, resource or scope line that word. Attributes, kind, status are content.
fn label(content: &str) -> String {
    if let Some(rest) = content.strip_prefix("event") {
        let words: Vec<&str> = rest
            .split(' ')
            .filter(|w| !w.is_empty())
            .take_while(|w| !w.contains('='))
            .collect();
        return format!("event {}", words.join(" ")).trim_end().to_owned();
    }
    for detail in ["link", "resource", "scope"] {
        if content.starts_with(&format!("{detail} ")) {
            return detail.to_owned();
        }
    }
    content
        .split("  ")
        .take_while(|col| {
            !(col.starts_with('[')
                || col.starts_with('(')
                || col.starts_with('!')
                || *col == "OK"
                || col.contains('='))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits a line into its depth (connector units of three characters) and content.
fn depth_and_content(line: &str) -> (usize, &str) {
    let mut rest = line;
    let mut depth = 0;
    while let Some(r) = ["├─ ", "└─ ", "│  ", "   "]
        .iter()
        .find_map(|p| rest.strip_prefix(p))
    {
        rest = r;
        depth += 1;
    }
    (depth, rest)
}

/// Whether a line heads a trace or a census shape (`trace#1`, `shape#2 ×11`).
fn is_header(line: &str) -> bool {
    (line.starts_with("trace#") || line.starts_with("shape#")) && !line.contains("  ")
}

fn place(text: &str) -> Vec<Placed> {
    let mut out = Vec::new();
    let mut header = String::new();
    // The path of the last line at each depth, and how often each child label was seen.
    let mut stack: Vec<String> = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if is_header(line) {
            // A census shape holds a trace: `shape#1 ×3 › trace#1`.
            if line.starts_with("trace#") && header.starts_with("shape#") {
                header = format!("{} › {line}", header.split(" › ").next().unwrap_or(""));
            } else {
                header = line.to_owned();
            }
            stack.clear();
            continue;
        }
        let (depth, content) = depth_and_content(line);
        stack.truncate(depth);
        let parent = stack.last().cloned().unwrap_or_else(|| header.clone());
        let base = format!("{parent} › {}", label(content));
        let n = seen.entry(base.clone()).or_insert(0);
        *n += 1;
        let path = if *n == 1 {
            base
        } else {
            format!("{base} #{n}")
        };
        stack.push(path.clone());
        out.push(Placed {
            path,
            content: content.to_owned(),
        });
    }
    out
}

/// The changes from `old` to `new` (both rendered forests), in the order of the new forest,
/// then what was removed; empty when they are the same tree.
#[must_use]
pub fn diff(old: &str, new: &str) -> Vec<Change> {
    let old = place(old);
    let new = place(new);
    let old_at: BTreeMap<&str, &str> = old
        .iter()
        .map(|p| (p.path.as_str(), p.content.as_str()))
        .collect();
    let new_at: BTreeMap<&str, &str> = new
        .iter()
        .map(|p| (p.path.as_str(), p.content.as_str()))
        .collect();
    let mut removed: Vec<&Placed> = old
        .iter()
        .filter(|p| !new_at.contains_key(p.path.as_str()))
        .collect();
    let mut changes = Vec::new();
    for p in &new {
        match old_at.get(p.path.as_str()) {
            Some(before) if *before == p.content => {}
            Some(before) => changes.push(Change::Changed {
                path: p.path.clone(),
                old: (*before).to_owned(),
                new: p.content.clone(),
            }),
            None => {
                // The same line gone from somewhere else is a move.
                if let Some(i) = removed.iter().position(|r| r.content == p.content) {
                    let from = removed.remove(i);
                    changes.push(Change::Moved {
                        from: from.path.clone(),
                        to: p.path.clone(),
                        line: p.content.clone(),
                    });
                } else {
                    changes.push(Change::Added {
                        path: p.path.clone(),
                        line: p.content.clone(),
                    });
                }
            }
        }
    }
    changes.extend(removed.into_iter().map(|r| Change::Removed {
        path: r.path.clone(),
        line: r.content.clone(),
    }));
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

    #[test]
    fn same_tree_no_changes() {
        assert!(diff(OLD, OLD).is_empty());
    }

    #[test]
    fn an_attribute_changed_in_place() {
        let new = OLD.replace("state=COMPLETE", "state=EXECUTOR_ERROR");
        let changes = diff(OLD, &new);
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
    fn added_removed_and_moved() {
        // The event moves from create_run to the publish span; a span is added; an event goes.
        let new = "trace#1
metis-api  POST /runs  [server]  http.response.status_code=200
└─ create_run  run_id=[run#1] user_id=alice
   ├─ publish x  [producer]
   │  ├─ event INFO \"Run created\" run_id=[run#1]
   │  └─ metis-engine-generic  workflow_run  [consumer]  state=COMPLETE
   │     └─ event INFO phase state=initializing
   └─ persist
";
        let changes = diff(OLD, new);
        let text: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert!(
            changes.iter().any(|c| matches!(c, Change::Moved { from, to, .. }
                if from == "trace#1 › metis-api POST /runs › create_run › event INFO \"Run created\""
                && to == "trace#1 › metis-api POST /runs › create_run › publish x › event INFO \"Run created\"")),
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
            changes
                .iter()
                .any(|c| matches!(c, Change::Removed { line, .. }
                if line == "event INFO phase state=running")),
            "{text:#?}"
        );
    }

    #[test]
    fn labels() {
        assert_eq!(
            label("metis-api  POST /runs  [server]  a=1"),
            "metis-api POST /runs"
        );
        assert_eq!(label("create_run  (span#2)  run_id=x"), "create_run");
        assert_eq!(
            label("workflow_run  [consumer]  !ERROR \"boom\"  state=X"),
            "workflow_run"
        );
        assert_eq!(label("event INFO phase state=running"), "event INFO phase");
        assert_eq!(label("link →create_run kind=x"), "link");
    }
}
