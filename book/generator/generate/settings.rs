//! Every environment variable the services read, from the tables the code declares next to the
//! code that reads them ([`common::settings`]): meanings as written there, defaults computed
//! from the constants the code applies. A changed default therefore changes this page.
//!
//! Coverage is checked, not hoped for: every variable name the reading code mentions as a
//! string literal (`"APP_PORT"`, in the files of [`READERS`]; [`NOT_SETTINGS`] are not
//! variables) must be in a table, and every
//! table entry must still be mentioned by its reader; either slip is a problem that fails
//! `check`.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use anyhow::{Context, Result};
use common::settings::Setting;
use regex::Regex;

use super::{cell, preamble};
use crate::Workspace;

/// The files that read settings, and the tables that declare them.
pub const READERS: &[(&str, &[Setting])] = &[
    ("crates/common/src/nats.rs", common::nats::SETTINGS),
    ("crates/telemetry/src/lib.rs", telemetry::SETTINGS),
    ("crates/api/src/config.rs", api::config::SETTINGS),
    ("crates/api/src/auth.rs", api::auth::SETTINGS),
    ("crates/engine/src/settings.rs", engine::settings::SETTINGS),
];

/// Files outside [`READERS`] that read the environment, and why that declares nothing new:
/// every other file under `crates/*/src` that calls `env::var`/`var_os` is a problem.
pub const OTHER_READERS: &[(&str, &str)] = &[
    (
        "crates/api/src/main.rs",
        "the `token` subcommand reads `AUTH_JWT_SECRET`/`AUTH_JWT_SECRET_FILE`, declared by `api::auth::SETTINGS` (checked below)",
    ),
    (
        "crates/engine/src/process.rs",
        "passes `PATH`, `LANG` and the like through to a workflow's allowlisted environment",
    ),
    ("crates/engine/src/sandbox.rs", "looks `bwrap` up on `PATH`"),
    (
        "crates/engine/src/injected.rs",
        "debug builds only: `METIS_TEST_BUG`, a bug the chaos tests inject on purpose (compiled out of release builds)",
    ),
    (
        "crates/test-support/src/lib.rs",
        "test-only: the harness's own variables, in `harness::settings`",
    ),
];

/// Sections of the page: title, who reads them, tables.
const SECTIONS: &[(&str, &str, &[&[Setting]])] = &[
    (
        "Both services",
        "`metis-api` and every engine (`common::nats::SETTINGS`, `telemetry::SETTINGS`)",
        &[common::nats::SETTINGS, telemetry::SETTINGS],
    ),
    (
        "metis-api",
        "`api::config::SETTINGS`, `api::auth::SETTINGS`",
        &[api::config::SETTINGS, api::auth::SETTINGS],
    ),
    (
        "metis-engine-generic (every engine)",
        "`engine::settings::SETTINGS`",
        &[engine::settings::SETTINGS],
    ),
];

/// A string literal that is a whole variable name: capitals, digits, at least one `_`.
static NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#""([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)""#).expect("static regex"));

/// Literals of that shape that are not variables: NATS stream names (`METIS_RUNS`, on the
/// NATS page) and what cargo sets at build time (`CARGO_PKG_VERSION`).
const NOT_SETTINGS: &[&str] = &["METIS_", "CARGO_"];

/// Names mentioned as literals in `text`, outside comments.
/// A name a settings table declares always counts (`METIS_UNSAFE_NO_SANDBOX`).
fn mentioned(text: &str, declared: &BTreeSet<&str>) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .flat_map(|l| NAME.captures_iter(l).map(|c| c[1].to_owned()))
        .filter(|n| declared.contains(n.as_str()) || !NOT_SETTINGS.iter().any(|p| n.starts_with(p)))
        .collect()
}

fn collect_rust(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_rust(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// Generates `settings.md`.
pub fn generate(ws: &Workspace) -> Result<(String, Vec<String>)> {
    let mut problems = Vec::new();
    let mut read_anywhere = BTreeSet::new();
    let declared_anywhere: BTreeSet<&str> = READERS
        .iter()
        .flat_map(|(_, t)| t.iter().map(|s| s.name))
        .collect();
    for (file, _) in READERS {
        let path = ws.root.join(file);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        // The tables are in the same files: only the reading code counts.
        let code = match text.split_once("pub const SETTINGS") {
            Some((before, rest)) => {
                format!(
                    "{before}{}",
                    rest.split_once("\n];\n").map_or("", |(_, after)| after)
                )
            }
            None => text.clone(),
        };
        for name in mentioned(&code, &declared_anywhere) {
            if !declared_anywhere.contains(name.as_str()) {
                problems.push(format!(
                    "{file} reads `{name}`, which no settings table declares"
                ));
            }
            read_anywhere.insert(name);
        }
    }
    // Every file that reads the environment is a reader above or says why it declares nothing.
    for dir in ["crates"] {
        let mut files = Vec::new();
        collect_rust(&ws.root.join(dir), &mut files)?;
        for file in files {
            let rel = file
                .strip_prefix(&ws.root)
                .unwrap_or(&file)
                .display()
                .to_string();
            if !rel.contains("/src/") {
                continue;
            }
            let text = std::fs::read_to_string(&file)?;
            let reads = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .any(|l| l.contains("env::var") || l.contains("var_os("));
            let known = READERS.iter().any(|(f, _)| *f == rel)
                || OTHER_READERS.iter().any(|(f, _)| *f == rel);
            if reads && !known {
                problems.push(format!(
                    "{rel} reads the environment but is neither a settings reader (READERS) nor                      listed with a reason in OTHER_READERS (book/generator/generate/settings.rs)"
                ));
            }
            if reads && rel == "crates/api/src/main.rs" {
                for name in mentioned(&text, &declared_anywhere) {
                    if !declared_anywhere.contains(name.as_str()) {
                        problems.push(format!(
                            "{rel} reads `{name}`, which no settings table declares"
                        ));
                    }
                }
            }
        }
    }
    for name in &declared_anywhere {
        // The OTLP exporter and the SDK read the OTEL_ ones themselves.
        if !read_anywhere.contains(*name) && !name.starts_with("OTEL_")
            || *name == "OTEL_EXPORTER_OTLP_ENDPOINT" && !read_anywhere.contains(*name)
        {
            problems.push(format!(
                "`{name}` is declared in a settings table, but no reading code mentions it"
            ));
        }
    }

    let mut md = preamble(
        "settings",
        "the settings tables of common::nats, telemetry, api::config, api::auth and engine::settings (defaults computed from the constants the code applies)",
    );
    md.push_str(
        "\nAn empty variable counts as unset; a value that does not parse is an error at start-up that names the variable.\n",
    );
    for (title, source, tables) in SECTIONS {
        md.push_str(&format!(
            "\n## {title}\n\nFrom {source}.\n\n| variable | meaning | default |\n| --- | --- | --- |\n"
        ));
        for s in tables.iter().flat_map(|t| t.iter()) {
            md.push_str(&format!(
                "| `{}` | {} | {} |\n",
                s.name,
                cell(s.meaning),
                cell(&(s.default)())
            ));
        }
    }
    Ok((md, problems))
}

/// Generates `settings-telemetry.md`: the `telemetry` crate's table alone, for the tracing
/// chapter's configuration page.
pub fn telemetry() -> Result<(String, Vec<String>)> {
    let mut md = preamble("settings", "`telemetry::SETTINGS`");
    md.push_str(
        "
| variable | meaning | default |
| --- | --- | --- |
",
    );
    for s in telemetry::SETTINGS {
        md.push_str(&format!(
            "| `{}` | {} | {} |
",
            s.name,
            cell(s.meaning),
            cell(&(s.default)())
        ));
    }
    Ok((md, Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_the_code_reads_is_declared() {
        let (md, problems) = generate(&Workspace::locate()).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
        for name in [
            "APP_PORT",
            "ENGINE_TTL_MS",
            "HEARTBEAT_INTERVAL_MS",
            "AUTH_MODE",
            "RUST_LOG",
        ] {
            assert!(md.contains(&format!("| `{name}` |")), "{name}");
        }
        // Defaults come from the constants the code applies.
        assert!(
            md.contains(&format!(
                "| `APP_PORT` | port to bind; `0` = ephemeral (the bound address is logged as `listening`) | `{}` |",
                api::config::DEFAULT_PORT
            )),
            "{md}"
        );
    }

    #[test]
    fn literals_in_code_count_and_comments_do_not() {
        let found = mentioned(
            "let a = get(\"APP_PORT\");\n// get(\"OLD_NAME\")\nlet b = \"SH\";",
            &BTreeSet::new(),
        );
        assert_eq!(found.into_iter().collect::<Vec<_>>(), ["APP_PORT"]);
    }
}
