//! The hand-written pages restate nothing the code owns. A chapter (any page under `book/src/`
//! but the generated ones) that draws a span tree, or holds a table with the columns of a
//! generated one (`| variable | meaning | default |`, `| phase | work | on failure |`, the NATS
//! layout's, the directives', …) whose rows name what the code's table declares (a setting or
//! `E2E_*` variable, a run state, a runtime phase, a NATS stream or bucket, a directive) is a
//! problem that fails `just book-check`: the page must `{{#include}}` the generated table or
//! `{{#snapshot}}` the tree instead. A table of its own (what the API does per state, which
//! key a setting takes) is prose, not a restatement.
//!
//! An annotated excerpt that teaches a format (not output) may draw tree lines if the line
//! before its fence says so: `<!-- excerpt: annotated, not output -->`.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};

use crate::Workspace;

/// The marker that allows an annotated excerpt.
pub const EXCERPT: &str = "<!-- excerpt: annotated, not output -->";

/// What the code's tables name.
fn owned_names() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    for (_, table) in super::settings::READERS {
        names.extend(table.iter().map(|s| s.name.to_owned()));
    }
    names.extend(
        harness::settings::VARIABLES
            .iter()
            .chain(harness::settings::OTHERS)
            .map(|v| v.name.to_owned()),
    );
    names.extend(common::State::ALL.iter().map(|s| s.as_str().to_owned()));
    names.extend(engine::run::PHASES.iter().map(|p| p.name.to_owned()));
    names.extend(common::nats::NAMES.map(str::to_owned));
    names.extend(
        crate::directives::DIRECTIVES
            .iter()
            .map(|d| format!("{{{{#{} {}}}}}", d.name, d.argument)),
    );
    names
}

/// The header rows of the generated tables, normalised (`variable|meaning|default`).
pub fn generated_headers(ws: &Workspace) -> BTreeSet<String> {
    let mut headers = BTreeSet::new();
    for entry in std::fs::read_dir(ws.root.join(super::DIR))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.windows(2) {
            if pair[1].trim_start().starts_with("| ---") {
                headers.insert(header(pair[0]));
            }
        }
    }
    headers
}

fn header(row: &str) -> String {
    row.trim()
        .trim_matches('|')
        .split('|')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("|")
}

/// The problems of one page's text.
pub fn check_page(
    name: &str,
    text: &str,
    owned: &BTreeSet<String>,
    headers: &BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut fence: Option<bool> = None; // Some(allowed) inside a fenced block
    let mut previous = "";
    let mut in_generated_shape = false;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            fence = match fence {
                Some(_) => None,
                None => Some(previous.trim() == EXCERPT),
            };
        } else if fence == Some(false) && (line.contains("├─ ") || line.contains("└─ ")) {
            problems.push(format!(
                "{name}:{}: a span tree drawn by hand; use {{{{#snapshot NAME}}}} (or mark an \
                 annotated format excerpt with `{EXCERPT}`)",
                n + 1
            ));
        } else if fence.is_none() && !trimmed.starts_with('|') {
            in_generated_shape = false;
        } else if fence.is_none() && !in_generated_shape && trimmed.starts_with('|') {
            in_generated_shape = headers.contains(&header(trimmed));
        } else if fence.is_none()
            && let Some(first) = trimmed
                .strip_prefix('|')
                .and_then(|row| row.split('|').next())
        {
            let cell = first.trim().trim_matches('`').trim_start_matches('\\');
            if owned.contains(cell) {
                problems.push(format!(
                    "{name}:{}: a table row restates `{cell}`, which a code table declares; \
                     include the generated table instead",
                    n + 1
                ));
            }
        }
        previous = line;
    }
    problems
}

/// Every problem of the hand-written pages.
pub fn check(ws: &Workspace) -> Result<Vec<String>> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut pages = Vec::new();
    walk(&ws.root.join("book/src"), &mut pages)?;
    pages.sort();
    let generated = [
        ws.root.join(super::DIR),
        ws.root.join(super::scenarios::PAGES),
    ];
    let owned = owned_names();
    let headers = generated_headers(ws);
    let mut problems = Vec::new();
    for page in pages {
        if generated.iter().any(|g| page.starts_with(g)) {
            continue;
        }
        let text = std::fs::read_to_string(&page)?;
        let name = page
            .strip_prefix(&ws.root)
            .unwrap_or(&page)
            .display()
            .to_string();
        problems.extend(check_page(&name, &text, &owned, &headers));
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restated_row_or_a_drawn_tree_is_named() {
        let owned = owned_names();
        let headers = generated_headers(&Workspace::locate());
        let page = "# x\n\n| variable | meaning | default |\n| --- | --- | --- |\n| `APP_PORT` | the port | `8080` |\n\n| setting | key |\n| --- | --- |\n| `APP_PORT` | its own table |\n\n```text\ntrace#1\nmetis-api  POST /runs\n└─ create_run\n```\n\n<!-- excerpt: annotated, not output -->\n```text\n└─ create_run   ← a span\n```\n";
        let problems = check_page("p.md", page, &owned, &headers);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].starts_with("p.md:5:") && problems[0].contains("APP_PORT"));
        assert!(problems[1].starts_with("p.md:14:"), "{problems:#?}");
    }

    #[test]
    fn the_committed_pages_restate_nothing() {
        let problems = check(&Workspace::locate()).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
