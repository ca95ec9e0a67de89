//! The harness's environment variables in one table.
//!
//! The tables live next to the code that reads the variables, in `harness::settings`.
//! Every `E2E_*` name that appears anywhere in the Rust sources of `harness/`, `scenarios/`
//! and `crates/test-support/` must be described in its `VARIABLES`; so must the few other
//! variables the harness reads (`OTHERS`). A name found but not described, or described
//! but no longer found, is a problem that fails `check`. The "used in" column lists the files
//! that use the name in a string literal (reading or setting it), not those that only mention
//! it in a comment.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::LazyLock;

use anyhow::{Context, Result};
use regex::Regex;

use super::{cell, preamble};
use crate::Workspace;

use harness::settings::{OTHERS, VARIABLES};

/// The file that holds the tables, relative to the workspace root (not scanned).
pub const TABLES: &str = "harness/src/settings.rs";

/// Folders scanned, relative to the workspace root.
pub const SCANNED: [&str; 3] = ["harness", "scenarios", "crates/test-support"];

static E2E_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\bE2E_[A-Z0-9_]*[A-Z0-9]\b").expect("static regex"));

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// Name → files (relative) that use it in a string literal; plus every name mentioned at all.
#[derive(Default)]
struct Found {
    mentioned: BTreeSet<String>,
    used_in: BTreeMap<String, BTreeSet<String>>,
}

fn scan(ws: &Workspace) -> Result<Found> {
    let mut files = Vec::new();
    for dir in SCANNED {
        rust_files(&ws.root.join(dir), &mut files)?;
    }
    files.sort();
    // The tables themselves name every variable; only the code that reads or sets one counts.
    files.retain(|f| !f.ends_with(TABLES));
    let mut found = Found::default();
    for path in files {
        let text = std::fs::read_to_string(&path)?;
        let rel = path
            .strip_prefix(&ws.root)
            .unwrap_or(&path)
            .display()
            .to_string();
        let mut names: BTreeSet<String> = E2E_NAME
            .find_iter(&text)
            .map(|m| m.as_str().to_owned())
            .collect();
        for v in OTHERS {
            if text.contains(v.name) {
                names.insert(v.name.to_owned());
            }
        }
        for name in names {
            if text.contains(&format!("\"{name}\"")) {
                found
                    .used_in
                    .entry(name.clone())
                    .or_default()
                    .insert(rel.clone());
            }
            found.mentioned.insert(name);
        }
    }
    Ok(found)
}

/// Generates `e2e-variables.md`.
pub fn generate(ws: &Workspace) -> Result<(String, Vec<String>)> {
    let found = scan(ws)?;
    let mut problems = Vec::new();
    for name in &found.mentioned {
        if name.starts_with("E2E_") && !VARIABLES.iter().any(|v| v.name == name) {
            problems.push(format!(
                "`{name}` appears in {} but is not described in VARIABLES (harness/src/settings.rs)",
                SCANNED.join(", ")
            ));
        }
    }
    let mut out = preamble(
        "e2e_vars",
        "the E2E_* names in harness/, scenarios/ and crates/test-support/",
    );
    out.push_str(
        "\n| variable | values | when unset | meaning | used in |\n| --- | --- | --- | --- | --- |\n",
    );
    for v in VARIABLES.iter().chain(OTHERS) {
        if !found.mentioned.contains(v.name) {
            problems.push(format!(
                "`{}` is described but no longer appears in {}; remove it",
                v.name,
                SCANNED.join(", ")
            ));
            continue;
        }
        let used = found
            .used_in
            .get(v.name)
            .map(|f| {
                f.iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| "—".to_owned());
        let cells = [
            format!("`{}`", v.name),
            v.values.to_owned(),
            v.default.to_owned(),
            v.meaning.to_owned(),
            used,
        ];
        let cells: Vec<String> = cells.iter().map(|c| cell(c)).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    Ok((out, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        for d in SCANNED {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        for (p, text) in files {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let ws = Workspace {
            root: dir.path().to_owned(),
        };
        (dir, ws)
    }

    #[test]
    fn an_undocumented_variable_fails() {
        let (_d, ws) = ws_with(&[(
            "harness/src/x.rs",
            r#"fn f() { std::env::var("E2E_SHINY_NEW"); }"#,
        )]);
        let (_, problems) = generate(&ws).unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("`E2E_SHINY_NEW`") && p.contains("not described")),
            "{problems:?}"
        );
    }

    #[test]
    fn a_documented_variable_that_vanished_fails() {
        let (_d, ws) = ws_with(&[("harness/src/x.rs", "// E2E_BACKEND only\n")]);
        let (_, problems) = generate(&ws).unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("`E2E_KEEP`") && p.contains("no longer appears")),
            "{problems:?}"
        );
        assert!(
            !problems.iter().any(|p| p.contains("`E2E_BACKEND`")),
            "{problems:?}"
        );
    }

    #[test]
    fn used_in_lists_files_with_string_literals_only() {
        let (_d, ws) = ws_with(&[
            ("harness/src/a.rs", r#"var("E2E_BACKEND")"#),
            ("harness/src/b.rs", "//! E2E_BACKEND in a doc"),
        ]);
        let (md, _) = generate(&ws).unwrap();
        let row = md
            .lines()
            .find(|l| l.starts_with("| `E2E_BACKEND`"))
            .unwrap();
        assert!(row.ends_with("| `harness/src/a.rs` |"), "{row}");
    }

    #[test]
    fn the_workspace_is_fully_documented() {
        let (_, problems) = generate(&Workspace::locate()).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
