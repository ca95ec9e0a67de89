//! The scenario gallery: one section per committed snapshot — what it pins, its timeline, its
//! span tree and, when the test is anchored, its code.
//!
//! The page holds directives, not trees: `{{#timeline}}`, `{{#snapshot}}` and `{{#scenario}}`
//! are expanded at build time from the files themselves, so a snapshot change shows up in the
//! book without regenerating anything. What *is* generated is the list: a new or removed
//! snapshot changes this page, so `check` notices a snapshot the book does not show.
//!
//! "What it pins" comes from the snapshot table in `scenarios/README.md` (the row whose first
//! cell is the snapshot name in backticks); the code from the file in `scenarios/tests/it/`
//! that has `// ANCHOR: <snapshot name>`.

use anyhow::{Context, Result};

use super::preamble;
use crate::Workspace;
use crate::anchor;
use crate::snapshot::Snapshot;

/// `snapshot name → what it pins` from the README's table.
fn readme_descriptions(readme: &str) -> Vec<(String, String)> {
    readme
        .lines()
        .filter_map(|l| {
            let mut cells = l.strip_prefix('|')?.split(" | ");
            let name = cells.next()?.trim().strip_prefix('`')?.strip_suffix('`')?;
            let what = cells.next()?.trim().trim_end_matches('|').trim();
            Some((name.to_owned(), what.to_owned()))
        })
        .collect()
}

/// Generates `scenarios.md`.
pub fn generate(ws: &Workspace, snapshots: &[Snapshot]) -> Result<(String, Vec<String>)> {
    let readme_path = ws.root.join("scenarios/README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap_or_default();
    let described = readme_descriptions(&readme);
    let code_dir = ws.scenario_code_dir();
    let mut files: Vec<(String, Vec<String>)> = Vec::new();
    for entry in
        std::fs::read_dir(&code_dir).with_context(|| format!("listing {}", code_dir.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path)?;
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            files.push((name, anchor::names(&text)));
        }
    }
    files.sort();

    let mut out = preamble(
        "scenarios",
        "the list of scenarios/snapshots/*.snap, scenarios/README.md and the ANCHOR markers in scenarios/tests/it",
    );
    let mut problems = Vec::new();
    for snap in snapshots {
        let name = &snap.name;
        out.push_str(&format!("\n## `{name}`\n\n"));
        match described.iter().find(|(n, _)| n == name) {
            Some((_, what)) => out.push_str(&format!("What it pins: {what}.\n\n")),
            None => problems.push(format!(
                "snapshot `{name}` has no row in the table of scenarios/README.md"
            )),
        }
        out.push_str(&format!(
            "{{{{#timeline {name}}}}}\n\n{{{{#snapshot {name}}}}}\n"
        ));
        if let Some((file, _)) = files.iter().find(|(_, anchors)| anchors.contains(name)) {
            out.push_str(&format!(
                "\n<details>\n<summary>The scenario: <code>scenarios/tests/it/{file}</code></summary>\n\n{{{{#scenario {file}:{name}}}}}\n\n</details>\n"
            ));
        }
    }
    Ok((out, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_readme_table() {
        let d = readme_descriptions(
            "| snapshot | what it pins |\n| --- | --- |\n| `create_run` | the API side alone |\n| `run_fails` | non-zero exit: `EXECUTOR_ERROR` |\n",
        );
        assert_eq!(
            d,
            [
                ("create_run".to_owned(), "the API side alone".to_owned()),
                (
                    "run_fails".to_owned(),
                    "non-zero exit: `EXECUTOR_ERROR`".to_owned()
                )
            ]
        );
    }

    #[test]
    fn every_snapshot_gets_a_section_with_its_directives() {
        let ws = Workspace::locate();
        let snaps = Snapshot::load_all(&ws.snapshots_dir()).unwrap();
        let (md, _) = generate(&ws, &snaps).unwrap();
        for s in &snaps {
            let n = &s.name;
            assert!(md.contains(&format!("## `{n}`")), "{n}");
            assert!(md.contains(&format!("{{{{#snapshot {n}}}}}")), "{n}");
            assert!(md.contains(&format!("{{{{#timeline {n}}}}}")), "{n}");
        }
        assert!(md.contains("{{#scenario run.rs:run_completes}}"), "{md}");
    }
}
