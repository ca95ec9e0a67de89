//! The quick start's commands still run: every `sh` block of `book/src/quickstart.md` and every
//! `$ ` command of the transcript it shows (`scenarios/snapshots/transcripts/quick_start.snap`,
//! which the `quick_start` scenario runs for real) parse as bash (`bash -n`), every
//! `target/debug/NAME` is a binary some workspace crate builds, every `-p PACKAGE` a workspace
//! package, and every repository path (`fixtures/…`) exists. A command that no longer runs is
//! a problem that fails `just book-check`.

use std::collections::BTreeSet;

use anyhow::{Context, Result};

use crate::Workspace;

/// The shell text of the page's `sh` blocks and the transcript's commands.
pub fn commands(page: &str, transcript: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for line in page.lines() {
        match (&mut block, line.trim_start()) {
            (None, l) if l.starts_with("```sh") => block = Some(String::new()),
            (Some(b), l) if l.starts_with("```") => {
                out.push(std::mem::take(b));
                block = None;
            }
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    // A transcript command is its `$ ` line plus the continuation lines it ends in `\` for.
    let mut current: Option<String> = None;
    for line in transcript.lines() {
        if let Some(cmd) = current.as_mut() {
            cmd.push('\n');
            cmd.push_str(line);
        } else if let Some(cmd) = line.strip_prefix("$ ") {
            current = Some(cmd.to_owned());
        }
        let done = current
            .as_ref()
            .is_some_and(|c| !c.ends_with('\\') && quotes_closed(c));
        if done {
            out.extend(current.take());
        }
    }
    // One left open at the end is a command too (and bash -n says what is wrong with it).
    out.extend(current);
    out
}

/// Whether every single and double quote of `text` is closed (a command may span lines
/// inside quotes).
fn quotes_closed(text: &str) -> bool {
    let (mut single, mut double) = (false, false);
    for c in text.chars() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            _ => {}
        }
    }
    !single && !double
}

/// The binaries and packages of the workspace, from `cargo metadata`.
fn workspace_targets(ws: &Workspace) -> Result<(BTreeSet<String>, BTreeSet<String>)> {
    let meta = test_support::cargo_metadata(&ws.root)?;
    let (mut bins, mut packages) = (BTreeSet::new(), BTreeSet::new());
    for p in meta["packages"].as_array().into_iter().flatten() {
        packages.extend(p["name"].as_str().map(str::to_owned));
        for t in p["targets"].as_array().into_iter().flatten() {
            if t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
            {
                bins.extend(t["name"].as_str().map(str::to_owned));
            }
        }
    }
    Ok((bins, packages))
}

/// The problems of `commands` (see the module docs).
pub fn check_commands(
    ws: &Workspace,
    commands: &[String],
    bins: &BTreeSet<String>,
    packages: &BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for cmd in commands {
        let first = cmd.lines().next().unwrap_or_default();
        let syntax = std::process::Command::new("bash")
            .args(["-n", "-c", cmd])
            .output();
        match syntax {
            Ok(o) if o.status.success() => {}
            Ok(o) => problems.push(format!(
                "quick start: `{first}` is no valid bash: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => problems.push(format!("quick start: running bash -n: {e}")),
        }
        let words: Vec<&str> = cmd
            .split(|c: char| {
                c.is_whitespace() || matches!(c, '(' | ')' | '=' | '"' | '\'' | '&' | ';')
            })
            .filter(|w| !w.is_empty())
            .collect();
        for (i, word) in words.iter().enumerate() {
            let first = cmd
                .lines()
                .find(|l| l.contains(word))
                .unwrap_or(first)
                .trim();
            if let Some(bin) = word.strip_prefix("target/debug/") {
                if !bins.contains(bin) {
                    problems.push(format!(
                        "quick start: `{first}` runs target/debug/{bin}, which no workspace crate builds"
                    ));
                }
            } else if (word.starts_with("fixtures/") || word.starts_with("scenarios/"))
                && !ws.root.join(word.trim_end_matches(['}', ','])).exists()
            {
                problems.push(format!(
                    "quick start: `{first}` names {word}, which does not exist"
                ));
            } else if *word == "-p"
                && let Some(package) = words.get(i + 1)
                && !packages.contains(*package)
            {
                problems.push(format!(
                    "quick start: `{first}` names the package {package}, which is not in the workspace"
                ));
            }
        }
    }
    problems
}

/// Every problem of the quick start.
pub fn check(ws: &Workspace) -> Result<Vec<String>> {
    let page = std::fs::read_to_string(ws.root.join("book/src/quickstart.md"))
        .context("reading book/src/quickstart.md")?;
    let transcript = std::fs::read_to_string(
        ws.root
            .join("scenarios/snapshots/transcripts/quick_start.snap"),
    )
    .context("reading the quick start's transcript")?;
    let (bins, packages) = workspace_targets(ws)?;
    Ok(check_commands(
        ws,
        &commands(&page, &crate::snapshot::strip_header(&transcript)?),
        &bins,
        &packages,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_quick_start_runs() {
        let problems = check(&Workspace::locate()).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
    }

    /// A command that no longer runs is named: a binary that is gone, a fixture that moved, a
    /// package renamed, a quote left open.
    #[test]
    fn a_command_that_no_longer_runs_is_named() {
        let ws = Workspace::locate();
        let (bins, packages) = workspace_targets(&ws).unwrap();
        let page = "```sh\nENGINE_CONFIG_PATH=fixtures/engines/gone.yaml target/debug/metis-engine-generic &\ntarget/debug/metis-apx &\ncargo run -p spantre -- render x\n```\n";
        let transcript = "$ curl -s \"$METIS/readyz | python3 -m json.tool\n";
        let problems = check_commands(&ws, &commands(page, transcript), &bins, &packages);
        let text = problems.join("\n");
        for needle in [
            "fixtures/engines/gone.yaml",
            "target/debug/metis-apx",
            "package spantre",
            "no valid bash",
        ] {
            assert!(text.contains(needle), "{needle} missing:\n{text}");
        }
        assert_eq!(problems.len(), 4, "{text}");
    }
}
