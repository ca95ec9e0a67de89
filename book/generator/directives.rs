//! The book's own directives, run in-process by mdBook as the `metis` preprocessor.
//!
//! The directives are [`DIRECTIVES`], one row each (the book's *How the book is made* page
//! renders that table; a test holds it to the arms of the expansion).
//!
//! A directive preceded by a backslash (`\{{#snapshot x}}`) is left as written, without the
//! backslash, so a page can talk about directives. mdBook's `links` preprocessor runs first
//! and also eats one backslash before any `{{#…}}`, so a page writes two (`\\{{#snapshot x}}`). Every unresolved reference (a snapshot,
//! file or anchor that does not exist, an unknown argument shape) is collected, and the build
//! fails listing all of them with the chapter they are in.
//!
//! mdBook runs its own `links` preprocessor (`{{#include}}`) first, so directives inside
//! included files (the generated pages) are expanded too.

use std::path::{Component, Path, PathBuf};
use std::sync::LazyLock;

use anyhow::{Context, Result, anyhow, bail};
use mdbook_preprocessor::book::{Book, BookItem};
use mdbook_preprocessor::{Preprocessor, PreprocessorContext};
use regex::{Captures, Regex};

use crate::snapshot::Snapshot;
use crate::{anchor, timeline};

/// Where the directives read from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// `scenarios/snapshots/`.
    pub snapshots: PathBuf,
    /// `scenarios/tests/it/`.
    pub scenario_code: PathBuf,
    /// `fixtures/`.
    pub fixtures: PathBuf,
    /// The workspace root, for `{{#item}}`.
    pub root: PathBuf,
    /// The scenarios' artefact folders, for `{{#recording}}`: `$METIS_BOOK_RECORDINGS`, else
    /// `target/e2e/`.
    pub recordings: PathBuf,
}

impl Sources {
    /// The folders of a workspace.
    #[must_use]
    pub fn of(ws: &crate::Workspace) -> Self {
        Self {
            snapshots: ws.snapshots_dir(),
            scenario_code: ws.scenario_code_dir(),
            fixtures: ws.root.join("fixtures"),
            root: ws.root.clone(),
            recordings: std::env::var_os("METIS_BOOK_RECORDINGS")
                .map_or_else(|| ws.root.join("target/e2e"), PathBuf::from),
        }
    }
}

static DIRECTIVE: LazyLock<Regex> = LazyLock::new(|| {
    let names: Vec<&str> = DIRECTIVES.iter().map(|d| d.name).collect();
    Regex::new(&format!(
        r"(\\)?\{{\{{#({})(?:\s+([^{{}}]*?))?\s*\}}\}}",
        names.join("|")
    ))
    .expect("static regex")
});

/// A transcript as a preformatted block whose long lines (log lines, error messages) wrap at
/// the column instead of running past it (`metis.css`: `pre.metis-transcript`).
fn transcript_block(body: &str) -> String {
    format!(
        "\n<pre class=\"metis-transcript\"><code>{}</code></pre>\n",
        crate::timeline::esc(body.trim_end_matches('\n'))
    )
}

/// A code block around `body` whose fence is longer than any backtick run inside it.
#[must_use]
pub fn code_block(lang: &str, body: &str) -> String {
    let longest = body.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat((longest + 1).max(3));
    let body = body.trim_end_matches('\n');
    format!("{fence}{lang}\n{body}\n{fence}")
}

/// A relative path that stays inside its folder (no `..`, not absolute).
fn inside(base: &Path, rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    if rel.is_empty()
        || p.components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        bail!("`{rel}` must be a relative path inside {}", base.display());
    }
    Ok(base.join(p))
}

/// One directive: `{{#name argument}}`.
#[derive(Debug, Clone, Copy)]
pub struct Directive {
    /// Its name.
    pub name: &'static str,
    /// The shape of its argument.
    pub argument: &'static str,
    /// A real argument, for the example.
    pub example: &'static str,
    /// What it becomes (Markdown).
    pub becomes: &'static str,
}

/// Every directive the `metis` preprocessor expands.
pub const DIRECTIVES: &[Directive] = &[
    Directive {
        name: "snapshot",
        argument: "NAME",
        example: "run_completes",
        becomes: "the tree in `scenarios/snapshots/NAME.snap`, without insta's header, in a `text` block",
    },
    Directive {
        name: "timeline",
        argument: "NAME",
        example: "run_completes",
        becomes: "that tree drawn as an inline SVG waterfall of its structure (not time: snapshots have no timestamps)",
    },
    Directive {
        name: "transcript",
        argument: "NAME",
        example: "quick_start",
        becomes: "the commands a scenario ran and what they printed (`scenarios/snapshots/transcripts/NAME.snap`), in a block whose long lines wrap",
    },
    Directive {
        name: "recording",
        argument: "NAME",
        example: "run_completes",
        becomes: "the timings of the scenario's last run (`target/e2e/NAME/spans.json`, or `$METIS_BOOK_RECORDINGS/NAME/`) drawn to scale, with each span's attributes on hover; without a recording, a note that says so; `NAME` must be a snapshot",
    },
    Directive {
        name: "scenario",
        argument: "FILE:ANCHOR",
        example: "cancel.rs:cancel_running",
        becomes: "the code between `// ANCHOR: ANCHOR` and `// ANCHOR_END: ANCHOR` in `scenarios/tests/it/FILE`, in a `rust` block",
    },
    Directive {
        name: "fixture",
        argument: "PATH",
        example: "engines/generic.yaml",
        becomes: "the file `fixtures/PATH` in a code block named after its extension",
    },
    Directive {
        name: "item",
        argument: "PATH:NAME",
        example: "crates/engine/src/lib.rs:Engine",
        becomes: "the top-level Rust item `NAME` of the workspace file `PATH`, with its docs, in a `rust` block",
    },
    Directive {
        name: "spantree_diff",
        argument: "OLD NEW",
        example: "run_completes run_fails",
        becomes: "what `spantree diff` reports between two snapshots (real output, recomputed on every build), in a `text` block",
    },
];

fn expand_one(kind: &str, arg: &str, sources: &Sources) -> Result<String> {
    match kind {
        "snapshot" => {
            let snap = Snapshot::load(&sources.snapshots, arg)?;
            Ok(code_block("text", &snap.body))
        }
        "timeline" => {
            let snap = Snapshot::load(&sources.snapshots, arg)?;
            Ok(timeline::render(&snap))
        }
        "transcript" => {
            let dir = sources.snapshots.join("transcripts");
            let path = inside(&dir, &format!("{arg}.snap"))?;
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("no transcript `{arg}` ({})", path.display()))?;
            Ok(transcript_block(&crate::snapshot::strip_header(&text)?))
        }
        "recording" => {
            // The name must be a scenario with a snapshot, recorded or not.
            Snapshot::load(&sources.snapshots, arg)?;
            crate::recording::render(&inside(&sources.recordings, arg)?, arg)
        }
        "scenario" => {
            let (file, name) = arg
                .split_once(':')
                .with_context(|| format!("expected `FILE:ANCHOR`, got `{arg}`"))?;
            let path = inside(&sources.scenario_code, file)?;
            if !path.is_file() {
                bail!(
                    "no scenario file `{file}` ({} does not exist)",
                    path.display()
                );
            }
            Ok(code_block("rust", &anchor::extract_file(&path, name)?))
        }
        "fixture" => {
            let path = inside(&sources.fixtures, arg)?;
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("no fixture `{arg}` ({})", path.display()))?;
            let lang = match path.extension().and_then(|e| e.to_str()) {
                Some("yaml" | "yml") => "yaml",
                Some("sh") => "sh",
                Some("json") => "json",
                Some("toml") => "toml",
                _ => "text",
            };
            Ok(code_block(lang, &text))
        }
        "item" => {
            let (file, name) = arg
                .split_once(':')
                .with_context(|| format!("expected `PATH:NAME`, got `{arg}`"))?;
            let path = inside(&sources.root, file)?;
            if !path.is_file() {
                bail!("no file `{file}` ({} does not exist)", path.display());
            }
            Ok(code_block("rust", &anchor::item_file(&path, name)?))
        }
        "spantree_diff" => {
            let (old, new) = arg
                .split_once(char::is_whitespace)
                .with_context(|| format!("expected `OLD NEW` snapshot names, got `{arg}`"))?;
            let old = Snapshot::load(&sources.snapshots, old.trim())?;
            let new = Snapshot::load(&sources.snapshots, new.trim())?;
            let changes = spantree::diff::diff(&old.body, &new.body).with_context(|| {
                format!("comparing the snapshots {} and {}", old.name, new.name)
            })?;
            let text: String = changes.iter().map(|c| format!("{c}\n")).collect();
            Ok(code_block("text", &text))
        }
        other => bail!("unknown directive `{other}`"),
    }
}

/// Expands every directive in `content`. On failure returns one error per bad directive.
pub fn expand(content: &str, sources: &Sources) -> Result<String, Vec<anyhow::Error>> {
    let mut errors = Vec::new();
    let out = DIRECTIVE.replace_all(content, |c: &Captures<'_>| {
        let whole = &c[0];
        if c.get(1).is_some() {
            return whole[1..].to_owned();
        }
        let kind = &c[2];
        let arg = c.get(3).map_or("", |m| m.as_str().trim());
        if arg.is_empty() {
            errors.push(anyhow!("`{whole}` needs an argument"));
            return whole.to_owned();
        }
        match expand_one(kind, arg, sources) {
            Ok(text) => text,
            Err(e) => {
                errors.push(e.context(format!("`{whole}`")));
                whole.to_owned()
            }
        }
    });
    if errors.is_empty() {
        Ok(out.into_owned())
    } else {
        Err(errors)
    }
}

/// The `metis` preprocessor: [`expand`] on every chapter.
#[derive(Debug, Clone)]
pub struct MetisPreprocessor {
    sources: Sources,
}

impl MetisPreprocessor {
    /// Name under which mdBook knows it.
    pub const NAME: &'static str = "metis";

    /// A preprocessor reading from `sources`.
    #[must_use]
    pub fn new(sources: Sources) -> Self {
        Self { sources }
    }
}

impl Preprocessor for MetisPreprocessor {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn run(&self, _ctx: &PreprocessorContext, mut book: Book) -> Result<Book> {
        let mut problems = Vec::new();
        book.for_each_mut(|item| {
            let BookItem::Chapter(ch) = item else {
                return;
            };
            match expand(&ch.content, &self.sources) {
                Ok(text) => ch.content = text,
                Err(errors) => {
                    let at = ch
                        .source_path
                        .as_ref()
                        .map_or_else(|| ch.name.clone(), |p| p.display().to_string());
                    problems.extend(errors.into_iter().map(|e| format!("{at}: {e:#}")));
                }
            }
        });
        if problems.is_empty() {
            Ok(book)
        } else {
            bail!(
                "{} unresolved book directive(s):\n  {}",
                problems.len(),
                problems.join("\n  ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> (tempfile::TempDir, Sources) {
        let dir = tempfile::tempdir().unwrap();
        let snaps = dir.path().join("snapshots");
        let code = dir.path().join("it");
        let fixtures = dir.path().join("fixtures");
        for d in [&snaps, &code, &fixtures] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(
            snaps.join("demo.snap"),
            "---\nsource: x\n---\ntrace#1\nmetis-api  POST /runs  [server]\n└─ create_run  run_id=[run#1]\n",
        )
        .unwrap();
        std::fs::write(
            code.join("demo.rs"),
            "fn x() {}\n// ANCHOR: body\nlet a = 1;\n// ANCHOR_END: body\n",
        )
        .unwrap();
        std::fs::write(fixtures.join("e.yaml"), "engine: {}\n").unwrap();
        let s = Sources {
            snapshots: snaps,
            scenario_code: code,
            fixtures,
            root: dir.path().to_owned(),
            recordings: dir.path().join("e2e"),
        };
        (dir, s)
    }

    /// The table is the code: every row's name is an arm of the expansion (a bad argument is
    /// the arm's error, never "unknown directive"), and every arm is a row.
    #[test]
    fn the_directive_table_is_the_expansion() {
        let (_d, s) = sources();
        for d in DIRECTIVES {
            let error = expand_one(d.name, "no-such-thing", &s).err();
            assert!(
                error
                    .as_ref()
                    .is_none_or(|e| !e.to_string().contains("unknown directive")),
                "{} is in DIRECTIVES but not expanded",
                d.name
            );
        }
        let source = include_str!("directives.rs");
        let body = source
            .split("fn expand_one(")
            .nth(1)
            .and_then(|b| b.split("\n}\n").next())
            .unwrap();
        let arms: Vec<&str> = body
            .lines()
            .filter_map(|l| {
                l.trim()
                    .strip_prefix('"')?
                    .split_once("\" => ")
                    .map(|(n, _)| n)
            })
            .collect();
        let names: Vec<&str> = DIRECTIVES.iter().map(|d| d.name).collect();
        assert_eq!(arms, names, "the arms of expand_one, in the table's order");
    }

    #[track_caller]
    fn check_err(input: &str, needles: &[&str]) {
        let (_d, s) = sources();
        let errors = expand(input, &s).unwrap_err();
        let text = errors
            .iter()
            .map(|e| format!("{e:#}"))
            .collect::<Vec<_>>()
            .join("\n");
        for n in needles {
            assert!(text.contains(n), "expected `{n}` in the errors:\n{text}");
        }
    }

    #[test]
    fn snapshot_inserts_the_body_without_the_header() {
        let (_d, s) = sources();
        let out = expand("before\n\n{{#snapshot demo}}\n\nafter", &s).unwrap();
        assert_eq!(
            out,
            "before\n\n```text\ntrace#1\nmetis-api  POST /runs  [server]\n└─ create_run  run_id=[run#1]\n```\n\nafter"
        );
    }

    #[test]
    fn scenario_inserts_the_anchored_code() {
        let (_d, s) = sources();
        let out = expand("{{#scenario demo.rs:body}}", &s).unwrap();
        assert_eq!(out, "```rust\nlet a = 1;\n```");
    }

    #[test]
    fn fixture_and_timeline_expand() {
        let (_d, s) = sources();
        assert_eq!(
            expand("{{#fixture e.yaml}}", &s).unwrap(),
            "```yaml\nengine: {}\n```"
        );
        let t = expand("{{#timeline demo}}", &s).unwrap();
        assert!(
            t.contains(r#"id="timeline-demo""#) && t.contains("create_run"),
            "{t}"
        );
    }

    #[test]
    fn item_quotes_a_rust_item() {
        let (_d, s) = sources();
        assert_eq!(
            expand("{{#item it/demo.rs:x}}", &s).unwrap(),
            "```rust\nfn x() {}\n```"
        );
        check_err("{{#item it/demo.rs:Nope}}", &["`Nope`", "demo.rs"]);
        check_err("{{#item it/gone.rs:x}}", &["it/gone.rs"]);
    }

    #[test]
    fn an_escaped_directive_stays_as_written() {
        let (_d, s) = sources();
        assert_eq!(
            expand(r"write \{{#snapshot nope}} to", &s).unwrap(),
            "write {{#snapshot nope}} to"
        );
    }

    #[test]
    fn a_missing_snapshot_is_named() {
        check_err("{{#snapshot no_such_run}}", &["no_such_run", "demo"]);
        check_err("{{#timeline gone}}", &["gone"]);
    }

    #[test]
    fn a_missing_anchor_or_file_is_named() {
        check_err(
            "{{#scenario demo.rs:cancel_running}}",
            &["cancel_running", "demo.rs", "anchors here: body"],
        );
        check_err("{{#scenario nope.rs:x}}", &["nope.rs"]);
        check_err("{{#scenario demo.rs}}", &["FILE:ANCHOR"]);
        check_err("{{#fixture ../etc/passwd}}", &["relative path inside"]);
        check_err("{{#fixture missing.yaml}}", &["missing.yaml"]);
    }

    #[test]
    fn every_bad_directive_is_reported_at_once() {
        let (_d, s) = sources();
        let errors = expand("{{#snapshot a}} {{#snapshot demo}} {{#snapshot b}}", &s).unwrap_err();
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn the_fence_outgrows_backticks_in_the_body() {
        assert_eq!(code_block("text", "a ``` b\n"), "````text\na ``` b\n````");
    }
}
