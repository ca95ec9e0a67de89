//! The committed generated pages in `book/src/generated/`, and keeping them current.
//!
//! Each generator reads the source of truth and returns Markdown that the hand-written
//! chapters `{{#include}}`:
//!
//! | file | generator | source of truth |
//! | --- | --- | --- |
//! | `spans.md` | [`spans`] | the span registry `crates/telemetry/spans.toml` and `scenarios/snapshots/*.snap` |
//! | `book/src/scenarios/*.md`, the scenario lines of `book/src/SUMMARY.md` | [`scenarios`] | the snapshot list, `scenarios/README.md`, the guidance and `// ANCHOR:` markers in `scenarios/tests/it/` |
//! | `chaos-schedule.md` | [`chaos`] | `harness::chaos::Schedule::generate` (seed 1): the chaos page's example |
//! | `directives.md` | [`directives`] | `crate::directives::DIRECTIVES`, held to the expansion by a test |
//! | `invariants.md` | [`invariants`] | the *Architecture invariants* of `ARCHITECTURE.md`; an invariant without a proof, or naming a test that does not exist, is a problem |
//! | `e2e-variables.md` | [`e2e_vars`] | every `E2E_*` name in `harness/`, `scenarios/`, `crates/test-support/` |
//! | `engine-yaml.md` | [`engine_yaml`] | the serde types in `crates/common/src/config.rs` |
//! | `states.md` | [`states`] | `State::ALL`, `State::can_transition`, `State::is_terminal` (called) and the variants' docs |
//! | `nats.md` | [`nats`] | `common::nats::LAYOUT`: names and limits from the constants the code uses |
//! | `outcomes.md` | [`outcomes`] | `engine::outcome::outcome`, called for each case |
//! | `phases.md` | [`phases`] | `engine::run::PHASES`, the table the engine emits its `phase` events from |
//! | `routes.md` | [`routes`] | `api::openapi::document()`, the OpenAPI document the API serves |
//! | `settings.md` | [`settings`] | the settings tables of `common::nats`, `telemetry`, `api::config`, `api::auth`, `engine::settings` |
//! | `settings-telemetry.md` | [`settings::telemetry`] | `telemetry::SETTINGS` alone (the tracing chapter's configuration page) |
//! | `review-demo.md`, `review-demo.html` | [`review_demo`] | `run_completes.snap` with one deliberate change, through `spantree::review` |
//!
//! The hand-written pages are checked too ([`restated`]): one that draws a span tree or
//! restates a row of a table the code owns is a problem, and so is a quick-start command that
//! no longer runs ([`quickstart`]).
//!
//! Every file starts with a "generated — do not edit" comment. [`ensure`] is rust-analyzer's
//! `ensure_file_contents`: it writes what differs and reports which files did, so `build`
//! refreshes them and `check` fails listing them (rerunning then passes, and the diff is
//! there to review and commit). Generators also report *problems* — a span or variable with
//! no description, a described one that no longer exists — which fail `check` and are
//! printed as warnings by `build`.

pub mod chaos;
pub mod directives;
pub mod e2e_vars;
pub mod engine_yaml;
pub mod invariants;
pub mod nats;
pub mod outcomes;
pub mod phases;
pub mod quickstart;
pub mod restated;
pub mod review_demo;
pub mod routes;
pub mod scenarios;
pub mod settings;
pub mod spans;
pub mod states;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::Workspace;

/// One generated file.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// Path relative to the workspace root.
    pub path: PathBuf,
    /// Full content, preamble included.
    pub content: String,
}

/// What the generators produced.
#[derive(Debug, Default)]
pub struct Generation {
    /// The files.
    pub files: Vec<Generated>,
    /// Things a human must fix (undocumented spans or variables, stale descriptions).
    pub problems: Vec<String>,
}

/// The folder of generated pages, relative to the workspace root.
pub const DIR: &str = "book/src/generated";

/// The first line of every generated page.
#[must_use]
pub fn preamble(generator: &str, sources: &str) -> String {
    format!(
        "<!-- generated — do not edit. Made by book/generator/generate/{generator}.rs from {sources}; \
         `just book` regenerates it and `just book-check` fails while it is out of date. -->\n"
    )
}

/// Runs every generator.
pub fn all(ws: &Workspace) -> Result<Generation> {
    let mut out = Generation::default();
    let snapshots = crate::snapshot::Snapshot::load_all(&ws.snapshots_dir())?;
    let registry =
        spantree::registry::Registry::load(&ws.root.join("crates/telemetry/spans.toml"))?;
    for (name, result) in [
        ("spans.md", spans::generate(&registry, &snapshots)),
        ("e2e-variables.md", e2e_vars::generate(ws)),
        ("invariants.md", invariants::generate(ws)),
        ("directives.md", directives::generate()),
        ("chaos-schedule.md", chaos::generate()),
        ("engine-yaml.md", engine_yaml::generate(ws)),
        ("states.md", states::generate(ws)),
        ("routes.md", routes::generate()),
        ("nats.md", nats::generate()),
        ("outcomes.md", outcomes::generate()),
        ("phases.md", phases::generate()),
        ("settings.md", settings::generate(ws)),
        ("settings-telemetry.md", settings::telemetry()),
        ("review-demo.md", review_demo::markdown(ws)),
        ("review-demo.html", review_demo::html(ws)),
    ] {
        let (content, problems) = result.with_context(|| format!("generating {DIR}/{name}"))?;
        out.files.push(Generated {
            path: Path::new(DIR).join(name),
            content,
        });
        out.problems
            .extend(problems.into_iter().map(|p| format!("{DIR}/{name}: {p}")));
    }
    out.problems
        .extend(restated::check(ws).context("checking the hand-written pages")?);
    out.problems
        .extend(quickstart::check(ws).context("checking the quick start's commands")?);
    let (pages, problems) =
        scenarios::generate(ws, &snapshots).context("generating the scenario pages")?;
    out.files.extend(pages);
    out.problems.extend(problems);
    // A file in a generated folder that no generator makes is stale.
    for folder in [DIR, scenarios::PAGES] {
        let dir = ws.root.join(folder);
        if !dir.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(&dir)? {
            let name = entry?.file_name();
            let rel = Path::new(folder).join(&name);
            if !out.files.iter().any(|f| f.path == rel) {
                out.problems.push(format!(
                    "{} is in a generated folder but no generator makes it; delete it",
                    rel.display()
                ));
            }
        }
    }
    Ok(out)
}

/// Writes every file whose content differs from `files`; returns the paths it wrote.
pub fn ensure(ws: &Workspace, files: &[Generated]) -> Result<Vec<PathBuf>> {
    let mut changed = Vec::new();
    for f in files {
        let path = ws.root.join(&f.path);
        let old = std::fs::read_to_string(&path).ok();
        if old.as_deref() != Some(f.content.as_str()) {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&path, &f.content)
                .with_context(|| format!("writing {}", path.display()))?;
            changed.push(f.path.clone());
        }
    }
    Ok(changed)
}

/// Escapes a table cell: `|` and newlines would break the row.
#[must_use]
pub fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_every_file_has_the_preamble() {
        let ws = Workspace::locate();
        let a = all(&ws).unwrap();
        let b = all(&ws).unwrap();
        assert_eq!(a.files, b.files);
        for f in a.files.iter().filter(|f| !f.path.ends_with("SUMMARY.md")) {
            assert!(
                f.content.starts_with("<!-- generated — do not edit."),
                "{} lacks the preamble",
                f.path.display()
            );
        }
    }

    #[test]
    fn ensure_writes_only_what_differs() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace {
            root: dir.path().to_owned(),
        };
        let files = vec![Generated {
            path: PathBuf::from("book/src/generated/x.md"),
            content: "new\n".to_owned(),
        }];
        assert_eq!(
            ensure(&ws, &files).unwrap(),
            [PathBuf::from("book/src/generated/x.md")]
        );
        assert!(
            ensure(&ws, &files).unwrap().is_empty(),
            "second run is clean"
        );
        std::fs::write(
            dir.path().join("book/src/generated/x.md"),
            "edited by hand\n",
        )
        .unwrap();
        assert_eq!(
            ensure(&ws, &files).unwrap().len(),
            1,
            "a hand edit is caught"
        );
    }
}
