//! The architecture invariants, from `ARCHITECTURE.md`, each with the tests that prove it.
//!
//! Every bullet of the section *Architecture invariants* must end in a `Proof:` or `Proofs:`
//! sentence naming at least one test in backticks (`scenario_name`, `module::test_name` or
//! `path::to::test_name`; the last `::` segment is the function). Each named test must exist:
//! a `fn` of that name in the workspace's Rust sources marked `#[test]` or `#[tokio::test]`.
//! An invariant without a proof, or naming a test that does not exist, is a problem that fails
//! `just book-check`. The page lists the invariants with their proofs, a scenario linked to its
//! page in the book.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};

use super::preamble;
use crate::Workspace;

/// The heading of the section in `ARCHITECTURE.md`.
pub const SECTION: &str = "## Architecture invariants";

/// One invariant: its text and the test names its proof sentence gives.
#[derive(Debug, Clone, PartialEq)]
pub struct Invariant {
    /// The whole bullet, joined into one line.
    pub text: String,
    /// The names in backticks after `Proof:`/`Proofs:`.
    pub proofs: Vec<String>,
}

/// The bullets of the section.
pub fn parse(architecture: &str) -> Result<Vec<Invariant>> {
    let section = architecture
        .split_once(SECTION)
        .map(|(_, rest)| rest)
        .with_context(|| format!("ARCHITECTURE.md has no `{SECTION}` section"))?;
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut bullets: Vec<String> = Vec::new();
    for line in section.lines() {
        if let Some(start) = line.strip_prefix("- ") {
            bullets.push(start.trim().to_owned());
        } else if line.starts_with("  ")
            && !line.trim().is_empty()
            && let Some(last) = bullets.last_mut()
        {
            last.push(' ');
            last.push_str(line.trim());
        }
    }
    Ok(bullets
        .into_iter()
        .map(|text| {
            let proofs = text
                .rsplit_once("Proofs:")
                .or_else(|| text.rsplit_once("Proof:"))
                .map(|(_, tail)| {
                    tail.split('`')
                        .skip(1)
                        .step_by(2)
                        .filter(|name| is_test_name(name))
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            Invariant { text, proofs }
        })
        .collect())
}

/// `a_name` or `path::to::a_name`: what a proof sentence names as a test.
fn is_test_name(name: &str) -> bool {
    !name.is_empty()
        && name.split("::").all(|seg| {
            !seg.is_empty()
                && seg
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
}

/// Every test function name in the workspace: a `fn` preceded (within a few lines) by
/// `#[test]` or a `#[tokio::test…]` attribute.
fn test_functions(ws: &Workspace) -> Result<BTreeSet<String>> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    walk(&path, out)?;
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for dir in ["crates", "harness", "scenarios", "book/generator"] {
        walk(&ws.root.join(dir), &mut files)?;
    }
    let mut names = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            let Some(rest) = trimmed
                .strip_prefix("async fn ")
                .or_else(|| trimmed.strip_prefix("fn "))
            else {
                continue;
            };
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let attributed = lines[i.saturating_sub(4)..i].iter().any(|l| {
                let l = l.trim();
                l == "#[test]" || l.starts_with("#[tokio::test")
            });
            if attributed {
                names.insert(name);
            }
        }
    }
    Ok(names)
}

/// The scenario pages of the book (`book/src/scenarios/<name>.md`), by name.
fn scenario_pages(ws: &Workspace) -> BTreeSet<String> {
    std::fs::read_dir(ws.root.join(super::scenarios::PAGES))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".md"))
                .map(str::to_owned)
        })
        .collect()
}

/// Generates `invariants.md`; a problem for every invariant without a proof and every named
/// test that does not exist.
pub fn generate(ws: &Workspace) -> Result<(String, Vec<String>)> {
    let path = ws.root.join("ARCHITECTURE.md");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let invariants = parse(&text)?;
    let tests = test_functions(ws)?;
    let pages = scenario_pages(ws);
    let mut problems = Vec::new();
    let mut md = preamble(
        "invariants",
        "the *Architecture invariants* of ARCHITECTURE.md and the tests they name",
    );
    md.push('\n');
    for (n, inv) in invariants.iter().enumerate() {
        let short: String = inv.text.chars().take(60).collect();
        if inv.proofs.is_empty() {
            problems.push(format!(
                "ARCHITECTURE.md: invariant {} (\"{short}…\") names no proof: end it with \
                 `Proof: the scenario `name`` or `Proofs: `module::test`, …`",
                n + 1
            ));
        }
        for proof in &inv.proofs {
            let func = proof.rsplit("::").next().unwrap_or(proof);
            if !tests.contains(func) {
                problems.push(format!(
                    "ARCHITECTURE.md: invariant {} (\"{short}…\") names `{proof}`, but no test \
                     function `{func}` exists",
                    n + 1
                ));
            }
        }
        let (claim, _) = inv
            .text
            .rsplit_once(" Proofs:")
            .or_else(|| inv.text.rsplit_once(" Proof:"))
            .unwrap_or((inv.text.as_str(), ""));
        let proofs: Vec<String> = inv
            .proofs
            .iter()
            .map(|p| {
                if pages.contains(p.as_str()) {
                    format!("[`{p}`](../scenarios/{p}.md)")
                } else {
                    format!("`{p}`")
                }
            })
            .collect();
        md.push_str(&format!(
            "{}. {claim}\n   *Proved by* {}.\n",
            n + 1,
            proofs.join(", ")
        ));
    }
    Ok((md, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# A\n\n## Architecture invariants\n\n- One claim that wraps\n  onto two lines. Proof: the scenario `run_completes`.\n- No proof here.\n- Named wrong. Proofs: `mod::no_such_test`, `spawn_runs_the_argv_without_a_shell_in_its_own_group`.\n\n## Next\n- not an invariant\n";

    #[test]
    fn bullets_and_their_proofs_are_read() {
        let inv = parse(TEXT).unwrap();
        assert_eq!(inv.len(), 3);
        assert_eq!(
            inv[0].text,
            "One claim that wraps onto two lines. Proof: the scenario `run_completes`."
        );
        assert_eq!(inv[0].proofs, ["run_completes"]);
        assert!(inv[1].proofs.is_empty());
        assert_eq!(
            inv[2].proofs,
            [
                "mod::no_such_test",
                "spawn_runs_the_argv_without_a_shell_in_its_own_group"
            ]
        );
    }

    /// The check fails on an invariant without a proof and on a proof naming no test, and
    /// passes on the committed ARCHITECTURE.md.
    #[test]
    fn a_missing_or_unknown_proof_is_a_problem() {
        let real = Workspace::locate();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ARCHITECTURE.md"), TEXT).unwrap();
        for sub in ["crates", "harness", "scenarios", "book/generator"] {
            std::os::unix::fs::symlink(real.root.join(sub), dir.path().join(sub)).unwrap_or_else(
                |_| {
                    std::fs::create_dir_all(dir.path().join(sub).parent().unwrap()).unwrap();
                    std::os::unix::fs::symlink(real.root.join(sub), dir.path().join(sub)).unwrap();
                },
            );
        }
        let ws = Workspace {
            root: dir.path().to_owned(),
        };
        let (_, problems) = generate(&ws).unwrap();
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].contains("invariant 2") && problems[0].contains("names no proof"));
        assert!(problems[1].contains("`mod::no_such_test`"), "{problems:#?}");
        let (md, problems) = generate(&real).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
        assert!(md.contains("*Proved by*"), "{md}");
    }
}
