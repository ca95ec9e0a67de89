//! `spantree`: the e2e suite's span trees for any OTLP/JSON trace dump — the receiver's
//! `GET /v1/traces`, an OpenTelemetry Collector file-exporter file (one `TracesData` per line),
//! or stdin (`-`).
//!
//! ```text
//! spantree render FILE [--redact-config F] [--shape] [--expect-traces N] [--draw-orphans]
//! spantree diff OLD NEW [--redact-config F] [--keep-read-only]
//!                           # dumps or rendered trees (snapshots); exit 1 when they differ
//! spantree review DIR [--markdown F] [--html F] [--code D] [--artefacts D] [--link URL]
//!                           # pending .snap.new files: PR comment and side-by-side page
//! spantree check FILE [--registry F | --no-registry]
//!                           # the tree invariants and the lint against the semantic
//!                           # conventions and the span registry (found from the current
//!                           # folder when not given); exit 1 with the findings
//! ```
//!
//! Every command takes `--id-family KEY=NAME` (repeatable): UUIDs that are values of
//! attribute KEY read `[NAME#N]` (Metis dumps: `--id-family run_id=run`); without it every
//! UUID is a `[uuid#N]` — spantree knows no service's ids. `render` and `diff` take
//! `--view FILE` (see `spantree::view`): the e2e harness writes one beside each scenario's
//! `spans.json`, so `spantree diff --view view.txt SNAPSHOT spans.json` compares a dump with
//! its snapshot exactly as the test did.
//!
//! Exit codes: 0 fine, 1 a difference or a finding, 2 a usage or input error.

use std::io::Read as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use spantree::view::View;
use spantree::{Options, SpanForest};

#[derive(Parser)]
#[command(
    name = "spantree",
    version,
    about = "Normalised span trees from OTLP/JSON trace dumps",
    after_help = "Exit codes: 0 fine; 1 a difference (diff), snapshots to review (review) or a finding (check); 2 a usage or input error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Number the UUIDs that are values of attribute KEY (or `*_KEY`) as a family of their
    /// own, `[NAME#N]`, wherever they occur; repeatable. spantree knows no service's ids: for
    /// Metis dumps pass `--id-family run_id=run` to get the `[run#N]` of the snapshots.
    #[arg(long, global = true, value_name = "KEY=NAME")]
    id_family: Vec<String>,
    /// Render dumps through this view (`spantree::view`: id families, redactions, which
    /// traces, census) — the `view.txt` the e2e harness writes beside each `spans.json`.
    /// Other flags add to it.
    #[arg(long, global = true, value_name = "FILE")]
    view: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the normalised tree of a dump.
    Render {
        /// An OTLP/JSON `TracesData` file, JSON lines of them, or `-` for stdin.
        file: String,
        /// Literal replacements, one `LITERAL => PLACEHOLDER` per line (`#` comments), applied
        /// on top of the built-in redaction (ids, times, durations, ports).
        #[arg(long)]
        redact_config: Option<String>,
        /// Names, kinds, services and links only.
        #[arg(long)]
        shape: bool,
        /// Fail unless the dump holds exactly this many traces.
        #[arg(long)]
        expect_traces: Option<usize>,
        /// Draw a span whose parent is not in the dump under a `[missing parent]` node
        /// instead of failing (a partial trace).
        #[arg(long)]
        draw_orphans: bool,
    },
    /// Tree-aware diff: traces paired by their root spans and content (not position), then
    /// spans added, removed, moved or changed, each with its path from the root. Each side is
    /// a dump or an already rendered tree (a snapshot file works).
    Diff {
        /// The old side.
        old: String,
        /// The new side.
        new: String,
        /// Redactions for a dump side (as for `render`), e.g. the scenario's folder.
        #[arg(long)]
        redact_config: Option<String>,
        /// Keep the successful read-only requests of a dump side (polling `GET`s); by
        /// default they are dropped, as the e2e snapshots drop them.
        #[arg(long)]
        keep_read_only: bool,
    },
    /// The snapshots to review in an insta snapshot folder (`.snap.new` beside `.snap`):
    /// writes the pull-request comment (Markdown: a tree-aware diff per change) and the HTML
    /// review page (old and new side by side); prints the Markdown when no file is given.
    /// Exit 1 when something is pending.
    Review {
        /// The snapshot folder (`scenarios/snapshots`).
        dir: String,
        /// Write the Markdown here.
        #[arg(long)]
        markdown: Option<String>,
        /// Write the HTML page here.
        #[arg(long)]
        html: Option<String>,
        /// Find each scenario's code (`fn <name>(`) under this folder.
        #[arg(long)]
        code: Option<String>,
        /// The artefact folder of the run (one sub-folder per scenario it ran): a snapshot
        /// without one is listed as not produced.
        #[arg(long)]
        artefacts: Option<String>,
        /// A link to the run's artefacts, for the comment.
        #[arg(long)]
        link: Option<String>,
    },
    /// Check the tree invariants (no open, orphan, duplicate or malformed spans; references
    /// that resolve) and lint every span against the OpenTelemetry semantic conventions
    /// (deprecated names, wrong value types) and against a span registry (`--registry`, or
    /// the one found from the current folder: undeclared spans and attributes, wrong types,
    /// missing required attributes); print the findings.
    Check {
        /// The dump.
        file: String,
        /// Fail unless the dump holds exactly this many traces.
        #[arg(long)]
        expect_traces: Option<usize>,
        /// A span registry (TOML). Default: the nearest `spans.toml` or
        /// `crates/telemetry/spans.toml` in the current folder or one above it (inside the
        /// Metis repository: its registry).
        #[arg(long)]
        registry: Option<String>,
        /// Lint against the semantic conventions only, even where a registry is found.
        #[arg(long, conflicts_with = "registry")]
        no_registry: bool,
    },
}

/// A failure of the tool itself (exit 2), as opposed to a finding (exit 1).
struct Usage(String);

fn read(path: &str) -> Result<String, Usage> {
    if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Usage(format!("reading stdin: {e}")))?;
        return Ok(text);
    }
    std::fs::read_to_string(path).map_err(|e| Usage(format!("reading {path}: {e}")))
}

fn source_name(path: &str) -> &str {
    if path == "-" { "stdin" } else { path }
}

fn options(
    mut options: Options,
    families: &[String],
    redact_config: Option<&str>,
    expect_traces: Option<usize>,
) -> Result<Options, Usage> {
    for family in families {
        let (key, name) = family
            .split_once('=')
            .filter(|(k, n)| !k.is_empty() && !n.is_empty())
            .ok_or_else(|| {
                Usage(format!(
                    "--id-family expects KEY=NAME (e.g. run_id=run), got {family:?}"
                ))
            })?;
        options = options.id_family(key, name);
    }
    if let Some(n) = expect_traces {
        options = options.expect_traces(n);
    }
    if let Some(path) = redact_config {
        for (i, line) in read(path)?.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (literal, placeholder) = line.split_once("=>").ok_or_else(|| {
                Usage(format!(
                    "{path}: line {}: expected `LITERAL => PLACEHOLDER`, got {line:?}",
                    i + 1
                ))
            })?;
            let (literal, placeholder) = (literal.trim(), placeholder.trim());
            if literal.is_empty() {
                return Err(Usage(format!("{path}: line {}: empty literal", i + 1)));
            }
            options = options.redact(literal, placeholder);
        }
    }
    Ok(options)
}

/// A side of a diff: a dump is rendered (without its successful read-only requests unless
/// `keep_read_only`), anything else is taken as rendered text (an insta snapshot's `---`
/// header is skipped).
fn rendered(path: &str, view: &View, keep_read_only: bool) -> Result<String, Usage> {
    let text = read(path)?;
    if text.trim_start().starts_with('{') {
        let data =
            spantree::dump::parse(source_name(path), &text).map_err(|e| Usage(e.to_string()))?;
        let tree = if keep_read_only {
            SpanForest::from_otlp(&data, &view.options).map(|f| f.render())
        } else {
            view.render(&data)
        };
        return tree.map_err(|e| {
            Usage(format!(
                "{}: the tree cannot be built: {e}",
                source_name(path)
            ))
        });
    }
    Ok(spantree::review::snapshot_body(&text).to_owned())
}

fn run(cli: Cli) -> Result<ExitCode, Usage> {
    let families = cli.id_family;
    let mut view = match &cli.view {
        Some(path) => View::parse(&read(path)?).map_err(|e| Usage(format!("{path}: {e}")))?,
        None => View::default(),
    };
    match cli.command {
        Command::Render {
            file,
            redact_config,
            shape,
            expect_traces,
            draw_orphans,
        } => {
            view.options = options(
                view.options,
                &families,
                redact_config.as_deref(),
                expect_traces,
            )?;
            view.options.draw_orphans |= draw_orphans;
            render(&file, &view, shape)
        }
        Command::Diff {
            old,
            new,
            redact_config,
            keep_read_only,
        } => {
            view.options = options(view.options, &families, redact_config.as_deref(), None)?;
            let changes = spantree::diff::diff(
                &rendered(&old, &view, keep_read_only)?,
                &rendered(&new, &view, keep_read_only)?,
            )
            .map_err(|e| Usage(format!("the trees cannot be compared: {e}")))?;
            for c in &changes {
                println!("{c}");
            }
            if changes.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("spantree: {} change(s)", changes.len());
                Ok(ExitCode::from(1))
            }
        }
        Command::Review {
            dir,
            markdown,
            html,
            code,
            artefacts,
            link,
        } => {
            let produced: Option<Vec<String>> = artefacts
                .map(|a| {
                    std::fs::read_dir(&a)
                        .map_err(|e| Usage(format!("reading {a}: {e}")))
                        .map(|entries| {
                            entries
                                .filter_map(Result::ok)
                                .filter(|e| e.path().is_dir())
                                .filter_map(|e| e.file_name().into_string().ok())
                                .collect()
                        })
                })
                .transpose()?;
            let pending = spantree::review::pending(
                std::path::Path::new(&dir),
                produced.as_deref(),
                code.as_deref().map(std::path::Path::new),
            )
            .map_err(|e| Usage(format!("reading {dir}: {e}")))?;
            let text = spantree::review::markdown(&pending, link.as_deref());
            let write = |path: &str, content: &str| {
                std::fs::write(path, content).map_err(|e| Usage(format!("writing {path}: {e}")))
            };
            match &markdown {
                Some(path) => write(path, &text)?,
                None => print!("{text}"),
            }
            if let Some(path) = &html {
                write(path, &spantree::review::html(&pending))?;
            }
            eprintln!("spantree: {} snapshot(s) to review", pending.len());
            Ok(if pending.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Check {
            file,
            expect_traces,
            registry,
            no_registry,
        } => {
            let found = if no_registry {
                None
            } else {
                registry.map(std::path::PathBuf::from).or_else(|| {
                    let here = std::env::current_dir().ok()?;
                    spantree::registry::Registry::find_from(&here)
                })
            };
            if let Some(path) = &found {
                eprintln!("spantree: span registry {}", path.display());
            }
            let registry = found
                .map(|r| spantree::registry::Registry::load(&r))
                .transpose()
                .map_err(|e| Usage(e.to_string()))?;
            let data = spantree::dump::parse(source_name(&file), &read(&file)?)
                .map_err(|e| Usage(e.to_string()))?;
            let mut failed = false;
            match SpanForest::from_otlp(
                &data,
                &options(Options::new(), &families, None, expect_traces)?,
            ) {
                Ok(f) => println!(
                    "ok: {} trace(s), {} span(s); the invariants hold",
                    f.traces().len(),
                    f.spans().count()
                ),
                Err(e) => {
                    println!("{e}");
                    failed = true;
                }
            }
            let findings = spantree::lint::lint(&data, registry.as_ref());
            let against = if registry.is_some() {
                "the registry and the semantic conventions"
            } else {
                "the semantic conventions"
            };
            if findings.is_empty() {
                println!("ok: every attribute fits {against}");
            } else {
                println!("{} lint finding(s) against {against}:", findings.len());
                for f in &findings {
                    println!("  {f}");
                }
                failed = true;
            }
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn render(file: &str, view: &View, shape: bool) -> Result<ExitCode, Usage> {
    let data =
        spantree::dump::parse(source_name(file), &read(file)?).map_err(|e| Usage(e.to_string()))?;
    let tree = if view.only.is_some() || view.census.is_some() {
        view.render(&data)
    } else {
        SpanForest::from_otlp(&data, &view.options)
            .map(|f| if shape { f.shape() } else { f }.render())
    };
    match tree {
        Ok(text) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!(
                "spantree: {}: the tree cannot be built: {e}",
                source_name(file)
            );
            Ok(ExitCode::from(1))
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(Usage(e)) => {
            eprintln!("spantree: {e}");
            ExitCode::from(2)
        }
    }
}
