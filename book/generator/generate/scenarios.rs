//! The scenario pages: `book/src/scenarios/index.md` (the index) and one page per committed
//! snapshot, `book/src/scenarios/<name>.md`, each listed in the sidebar under "Every scenario"
//! (the generator owns those `SUMMARY.md` lines).
//!
//! A page holds directives, not trees: `{{#snapshot}}`, `{{#timeline}}`, `{{#recording}}` and
//! `{{#scenario}}` are expanded at build time from the files themselves, so a snapshot change
//! shows up in the book without regenerating anything. What *is* generated is the list and
//! the words: a new or removed snapshot, a changed description or guidance changes the pages,
//! so `check` notices a snapshot the book does not show.
//!
//! Where the words come from: the test file alone, so adding a scenario touches nothing else
//! (besides the files the tools write).
//! - "What it pins", "Why it matters" and "If this changes": the doc comment right above the
//!   test's `// ANCHOR: <snapshot name>` in `scenarios/tests/it/`, three paragraphs starting
//!   with the labels in [`PARAGRAPHS`];
//! - the code: the anchored region itself.
//!
//! A snapshot without an anchor or any of the paragraphs is a problem that fails `check`; the
//! steps in `scenarios/README.md` name exactly these paragraphs (a test holds them to it).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{Generated, cell, preamble};
use crate::Workspace;
use crate::anchor;
use crate::snapshot::Snapshot;

/// Where the scenario pages live, relative to the workspace root.
pub const PAGES: &str = "book/src/scenarios";

/// The `SUMMARY.md` line the generated entries hang under.
pub const SUMMARY_PARENT: &str = "- [Every scenario](scenarios/index.md)";

/// The paragraphs every scenario's doc comment must have, as `**Label.**` openings, in the
/// order the page shows them.
pub const PARAGRAPHS: [&str; 3] = ["What it pins", "Why it matters", "If this changes"];

/// The reviewer's guidance of one scenario: each of [`PARAGRAPHS`] found, by label.
#[derive(Debug, Clone, Default, PartialEq)]
struct Guidance {
    paragraphs: Vec<(&'static str, String)>,
}

impl Guidance {
    fn get(&self, label: &str) -> Option<&str> {
        self.paragraphs
            .iter()
            .find(|(l, _)| *l == label)
            .map(|(_, t)| t.as_str())
    }
}

/// The `///` lines right above `// ANCHOR: name`, split into the two paragraphs.
fn guidance(text: &str, name: &str) -> Guidance {
    let lines: Vec<&str> = text.lines().collect();
    let Some(at) = lines
        .iter()
        .position(|l| l.trim() == format!("// ANCHOR: {name}"))
    else {
        return Guidance::default();
    };
    let mut doc: Vec<&str> = lines[..at]
        .iter()
        .rev()
        .take_while(|l| l.trim_start().starts_with("///"))
        .map(|l| {
            let t = l.trim_start().trim_start_matches("///");
            t.strip_prefix(' ').unwrap_or(t)
        })
        .collect();
    doc.reverse();
    let mut g = Guidance::default();
    for para in doc.join("\n").split("\n\n") {
        let para = para.split('\n').collect::<Vec<_>>().join(" ");
        for label in PARAGRAPHS {
            if let Some(rest) = para.strip_prefix(&format!("**{label}.**")) {
                g.paragraphs.push((label, rest.trim().to_owned()));
            }
        }
    }
    g
}

/// The scenario files and their anchors, sorted by file name.
fn scenario_files(ws: &Workspace) -> Result<Vec<(String, String)>> {
    let code_dir = ws.scenario_code_dir();
    let mut files = Vec::new();
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
            files.push((name, text));
        }
    }
    files.sort();
    Ok(files)
}

/// The scenario pages, the index, and `SUMMARY.md` with its scenario entries regenerated.
pub fn generate(ws: &Workspace, snapshots: &[Snapshot]) -> Result<(Vec<Generated>, Vec<String>)> {
    let files = scenario_files(ws)?;
    let mut problems = Vec::new();
    let mut out = Vec::new();
    let mut index = preamble(
        "scenarios",
        "the list of scenarios/snapshots/*.snap and the scenario code",
    );
    index.push_str(INDEX_INTRO);
    index.push_str("\n| scenario | what it pins |\n| --- | --- |\n");
    for snap in snapshots {
        let name = &snap.name;
        let file = files
            .iter()
            .find(|(_, text)| anchor::names(text).contains(name));
        let g = file
            .map(|(_, text)| guidance(text, name))
            .unwrap_or_default();
        let what = g.get("What it pins").map(|w| w.trim_end_matches('.'));
        index.push_str(&format!(
            "| [`{name}`]({name}.md) | {} |\n",
            cell(what.unwrap_or(""))
        ));
        let mut page = preamble("scenarios", &format!("the snapshot `{name}` and its test"));
        page.push_str(&format!("# `{name}`\n\n"));
        match file {
            Some((file, text)) => {
                for label in PARAGRAPHS {
                    match g.get(label) {
                        Some(t) => page.push_str(&format!("**{label}.** {t}\n\n")),
                        None => problems.push(format!(
                            "scenario `{name}` has no `**{label}.**` paragraph in the doc comment above `// ANCHOR: {name}` in scenarios/tests/it/{file}"
                        )),
                    }
                }
                let module = file.trim_end_matches(".rs");
                let test = anchor::extract(text, name)
                    .ok()
                    .and_then(|code| {
                        code.split("async fn ")
                            .nth(1)
                            .and_then(|rest| rest.split('(').next())
                            .map(str::to_owned)
                    })
                    .unwrap_or_else(|| name.clone());
                page.push_str(&format!(
                    "Run it alone: `E2E_BACKEND=local cargo test -p scenarios --test it -- {module}::{test} --exact` \
                     (its artefacts land in `target/e2e/{name}/`).\n\n"
                ));
                page.push_str(&format!(
                    "## Span tree\n\nAs committed in `scenarios/snapshots/{name}.snap`:\n\n{{{{#snapshot {name}}}}}\n\n"
                ));
                page.push_str(&format!(
                    "## Structure\n\nOne step per span start and event, in the tree's order (snapshots carry no time):\n\n{{{{#timeline {name}}}}}\n\n"
                ));
                page.push_str(&format!(
                    "## Recorded timings\n\n{{{{#recording {name}}}}}\n\n"
                ));
                page.push_str(&format!(
                    "## The scenario\n\n`scenarios/tests/it/{file}`:\n\n{{{{#scenario {file}:{name}}}}}\n"
                ));
            }
            None => problems.push(format!(
                "snapshot `{name}` has no `// ANCHOR: {name}` in scenarios/tests/it/"
            )),
        }
        out.push(Generated {
            path: Path::new(PAGES).join(format!("{name}.md")),
            content: page,
        });
    }
    out.push(Generated {
        path: Path::new(PAGES).join("index.md"),
        content: index,
    });
    let summary_path = ws.root.join("book/src/SUMMARY.md");
    let summary = std::fs::read_to_string(&summary_path)
        .with_context(|| format!("reading {}", summary_path.display()))?;
    match summary_with_scenarios(&summary, snapshots) {
        Some(s) => out.push(Generated {
            path: PathBuf::from("book/src/SUMMARY.md"),
            content: s,
        }),
        None => problems.push(format!(
            "book/src/SUMMARY.md has no line `{SUMMARY_PARENT}` to list the scenario pages under"
        )),
    }
    Ok((out, problems))
}

/// `summary` with the lines under [`SUMMARY_PARENT`] that link into `scenarios/` replaced by
/// one entry per snapshot; `None` when the parent line is missing.
fn summary_with_scenarios(summary: &str, snapshots: &[Snapshot]) -> Option<String> {
    let lines: Vec<&str> = summary.lines().collect();
    let at = lines.iter().position(|l| l.trim_end() == SUMMARY_PARENT)?;
    let end = lines[at + 1..]
        .iter()
        .position(|l| !l.trim_start().starts_with("- [`") || !l.contains("](scenarios/"))
        .map_or(lines.len(), |n| at + 1 + n);
    let mut out: Vec<String> = lines[..=at].iter().map(|l| (*l).to_owned()).collect();
    for s in snapshots {
        out.push(format!("  - [`{0}`](scenarios/{0}.md)", s.name));
    }
    out.extend(lines[end..].iter().map(|l| (*l).to_owned()));
    Some(out.join("\n") + "\n")
}

const INDEX_INTRO: &str = "# Every scenario

One page per end-to-end scenario with a snapshot: what it pins and why it matters, what to
look at when it changes, its span tree exactly as committed in
`scenarios/snapshots/<name>.snap`, its structure timeline, the timings of a recorded run, and
the test that produced it. The list is generated, so a new snapshot gets a page (and
`just test` fails until the regenerated pages are committed); the trees, timelines and code
are read at build time, so a changed snapshot changes its page with nothing to regenerate.

- **Structure timelines** show order, not time: one step per span start and per event, bars
  enclosing their in-process children, dashed arrows where a message crosses NATS, colours
  by service, red outlines for spans with an error status. Hover over a bar or a diamond for
  the full span or event line.
- **Recorded timings** are drawn from the `spans.json` the scenario's last run left in
  `target/e2e/<name>/` (true start and end times, every trace on one axis, the harness's fault
  actions as dashed lines at the moment they struck; hover over a bar for its attributes). They are not deterministic, so they are not part of the committed pages: the
  published site records them by running the suite before building, and a build without a
  recording says so.
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_guidance_above_the_anchor() {
        let text = "fn other() {}\n\n/// **What it pins.** A.\n///\n/// **Why it matters.** It is the\n/// promise.\n///\n/// **If this changes.** Look.\n// ANCHOR: x\nfn x() {}\n";
        let g = guidance(text, "x");
        assert_eq!(g.get("What it pins"), Some("A."));
        assert_eq!(g.get("Why it matters"), Some("It is the promise."));
        assert_eq!(g.get("If this changes"), Some("Look."));
        assert_eq!(guidance(text, "y"), Guidance::default());
    }

    /// The README's "Add a scenario" steps name exactly the paragraphs the check requires.
    #[test]
    fn the_readme_steps_name_exactly_the_required_paragraphs() {
        let readme =
            std::fs::read_to_string(Workspace::locate().root.join("scenarios/README.md")).unwrap();
        let steps = readme
            .split("## Add a scenario")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("an `## Add a scenario` section");
        let named: std::collections::BTreeSet<&str> = steps
            .split("`**")
            .skip(1)
            .filter_map(|rest| rest.split(".**`").next())
            .collect();
        let required: std::collections::BTreeSet<&str> = PARAGRAPHS.into_iter().collect();
        assert_eq!(named, required, "{steps}");
    }

    /// A throw-away scenario written as the README's steps say — a test file with the doc
    /// comment and anchors, and its snapshot — gets its page with nothing else touched; one
    /// without a paragraph is named as a problem.
    #[test]
    fn a_scenario_added_by_the_readme_steps_needs_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace {
            root: dir.path().to_owned(),
        };
        let it = dir.path().join("scenarios/tests/it");
        std::fs::create_dir_all(&it).unwrap();
        std::fs::create_dir_all(dir.path().join("scenarios/snapshots")).unwrap();
        std::fs::create_dir_all(dir.path().join("book/src")).unwrap();
        std::fs::write(
            dir.path().join("book/src/SUMMARY.md"),
            format!("# Summary\n\n{SUMMARY_PARENT}\n"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("scenarios/snapshots/throw_away.snap"),
            "---\nsource: scenarios/tests/it/support.rs\n---\ntrace#1\nmetis-api  GET /x  [server]\n",
        )
        .unwrap();
        let test = "/// **What it pins.** a throw-away check.\n///\n/// **Why it matters.** Because.\n///\n/// **If this changes.** Look.\n// ANCHOR: throw_away\n#[tokio::test(flavor = \"multi_thread\", worker_threads = 2)]\nasync fn throw_away() -> anyhow::Result<()> {\n    Ok(())\n}\n// ANCHOR_END: throw_away\n";
        std::fs::write(it.join("extra.rs"), test).unwrap();
        let snaps = Snapshot::load_all(&ws.snapshots_dir()).unwrap();
        let (pages, problems) = generate(&ws, &snaps).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let page = pages
            .iter()
            .find(|p| p.path.ends_with("throw_away.md"))
            .unwrap();
        assert!(
            page.content
                .contains("**What it pins.** a throw-away check.\n\n**Why it matters.** Because."),
            "{}",
            page.content
        );
        let summary = pages
            .iter()
            .find(|p| p.path.ends_with("SUMMARY.md"))
            .unwrap();
        assert!(summary.content.contains("(scenarios/throw_away.md)"));

        std::fs::write(
            it.join("extra.rs"),
            test.replacen("/// **What it pins.** a throw-away check.\n///\n", "", 1),
        )
        .unwrap();
        let (_, problems) = generate(&ws, &snaps).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("no `**What it pins.**` paragraph"),
            "{problems:?}"
        );
    }

    #[test]
    fn summary_entries_are_replaced_not_duplicated() {
        let snaps = |names: &[&str]| -> Vec<Snapshot> {
            names
                .iter()
                .map(|n| Snapshot {
                    name: (*n).to_owned(),
                    body: String::new(),
                    traces: Vec::new(),
                })
                .collect()
        };
        let summary = format!(
            "# Summary\n\n{SUMMARY_PARENT}\n  - [`old`](scenarios/old.md)\n\n# Next\n- [x](x.md)\n"
        );
        let once = summary_with_scenarios(&summary, &snaps(&["a", "b"])).unwrap();
        assert_eq!(
            once,
            format!(
                "# Summary\n\n{SUMMARY_PARENT}\n  - [`a`](scenarios/a.md)\n  - [`b`](scenarios/b.md)\n\n# Next\n- [x](x.md)\n"
            )
        );
        assert_eq!(
            summary_with_scenarios(&once, &snaps(&["a", "b"])).unwrap(),
            once
        );
        assert!(summary_with_scenarios("# Summary\n", &snaps(&["a"])).is_none());
    }

    #[test]
    fn every_snapshot_gets_a_page_with_its_directives_and_guidance() {
        let ws = Workspace::locate();
        let snaps = Snapshot::load_all(&ws.snapshots_dir()).unwrap();
        let (pages, problems) = generate(&ws, &snaps).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        for s in &snaps {
            let n = &s.name;
            let page = pages
                .iter()
                .find(|p| p.path.ends_with(format!("{n}.md")))
                .unwrap_or_else(|| panic!("no page for {n}"));
            for part in [
                format!("{{{{#snapshot {n}}}}}"),
                format!("{{{{#timeline {n}}}}}"),
                format!("{{{{#recording {n}}}}}"),
                "**What it pins.**".to_owned(),
                "**Why it matters.**".to_owned(),
                "**If this changes.**".to_owned(),
            ] {
                assert!(page.content.contains(&part), "{n}: {part}");
            }
        }
        let run = pages
            .iter()
            .find(|p| p.path.ends_with("run_completes.md"))
            .unwrap();
        assert!(
            run.content.contains("{{#scenario run.rs:run_completes}}"),
            "{}",
            run.content
        );
    }
}
