//! `quick_start`: the book's quick start, done for real. A user's first contact — is it up, a
//! token, one run submitted, followed to the end, its output read — run as the very shell
//! commands the book shows (`bash`, `curl`, `python3 -m json.tool`, in the checkout, one
//! shell session: a variable a command sets is there for the next), recorded as a transcript
//! of those commands and what they printed, and the trace that run left. Both are snapshots:
//! the book's quick start page shows them, so it can never show a command that does not run
//! or output the service no longer gives.
//!
//! The transcript is redacted like the trees, so it is the same on every run: the run id is
//! `[run#1]`, the engine's id `[engine#1]`, timestamps `[timestamp]`, an output line's
//! arrival number `[seq:int]`, the checkout `$PWD`, the scenario's folder `[e2e-dir]`. The
//! commands are shown exactly as they ran: the API's address is `$METIS`, which the quick
//! start's first block sets (`localhost:8080`) and this scenario points at its own API.

use std::fmt::Write as _;

use anyhow::Context as _;

use crate::support::{DEADLINE, check_tree, engine_ids, run_body, stack};

/// The commands a reader types and what came back, redacted.
struct Transcript {
    text: String,
    replacements: Vec<(String, String)>,
    /// The shell session: the variables commands set so far (`declare -p` output).
    session: std::path::PathBuf,
    /// What the reader's shell has from the quick start's first block.
    env: Vec<(String, String)>,
}

impl Transcript {
    /// The literal `from` reads as `to` in every later line.
    fn redact(&mut self, from: impl Into<String>, to: impl Into<String>) {
        let from = from.into();
        if !from.is_empty() {
            self.replacements.push((from, to.into()));
            self.replacements
                .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        }
    }

    fn clean(&self, s: &str) -> String {
        let mut s = s.to_owned();
        for (from, to) in &self.replacements {
            s = s.replace(from, to);
        }
        redact_seq(&redact_timestamps(&s))
    }

    /// Runs `command` in `bash` in the checkout, in this transcript's session (the variables
    /// earlier commands set), records it with a `$ ` prompt and what it printed, and returns
    /// that output. A command that fails fails the scenario, naming it.
    fn sh(&mut self, command: &str) -> anyhow::Result<String> {
        let session = self.session.display().to_string();
        let script = format!(
            "set -eo pipefail\n[ -f '{session}' ] && source '{session}'\n{command}\n\
             declare -p TOKEN RUN 2>/dev/null > '{session}.new' || true\n\
             mv '{session}.new' '{session}'\n"
        );
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(test_support::workspace_root())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .with_context(|| format!("running bash for `{command}`"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        anyhow::ensure!(
            out.status.success(),
            "the quick start's command `{command}` failed ({}):\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let shown = self.clean(&stdout);
        let _ = writeln!(self.text, "$ {command}");
        if !shown.trim().is_empty() {
            let _ = writeln!(self.text, "{}", shown.trim_end());
        }
        self.text.push('\n');
        Ok(stdout)
    }
}

/// `"seq": N` → `"seq": [seq:int]`: a line's number counts the lines of both output streams in
/// the order they arrived, which differs between runs (they are read concurrently).
fn redact_seq(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("\"seq\": ") {
        let (head, tail) = rest.split_at(i + "\"seq\": ".len());
        out.push_str(head);
        let digits = tail.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 {
            out.push_str("[seq:int]");
        }
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

/// RFC 3339 timestamps → `[timestamp]` (the only time values the API prints).
fn redact_timestamps(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let is_digits = |b: &[u8]| b.iter().all(u8::is_ascii_digit);
    while i < s.len() {
        // YYYY-MM-DDTHH:MM:SS
        if i + 19 <= s.len()
            && s.is_char_boundary(i)
            && is_digits(&bytes[i..i + 4])
            && bytes[i + 4] == b'-'
            && is_digits(&bytes[i + 5..i + 7])
            && bytes[i + 7] == b'-'
            && is_digits(&bytes[i + 8..i + 10])
            && matches!(bytes[i + 10], b'T' | b' ')
            && is_digits(&bytes[i + 11..i + 13])
            && bytes[i + 13] == b':'
        {
            let mut end = i + 19;
            while end < s.len()
                && (bytes[end].is_ascii_digit()
                    || matches!(bytes[end], b'.' | b':' | b'+' | b'-' | b'Z'))
            {
                end += 1;
            }
            out.push_str("[timestamp]");
            i = end;
        } else {
            let c = s[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// **What it pins.** The book's quick start for real: `/readyz`, a token from `metis-api token`,
/// one run submitted, followed and read; the transcript of commands and responses
/// (`snapshots/transcripts/quick_start.snap`) and the plain run's tree.
///
/// **Why it matters.** It is the first thing a new user does, and the book's quick start page
/// shows this transcript: the commands, the responses and the trace are what the service
/// really answers today.
///
/// **If this changes.** A changed response is a change of the HTTP API a user sees first:
/// check the transcript snapshot line by line, it is the documentation. The tree should stay
/// the plain run's (`run_completes`).
// ANCHOR: quick_start
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start() -> anyhow::Result<()> {
    stack("quick_start", 1)
        .await?
        .run(|s| {
            Box::pin(async move {
                let root = test_support::workspace_root().display().to_string();
                let metis = s.client.base.trim_start_matches("http://").to_owned();
                let bin = test_support::bin("metis-api")?;
                let mut t = Transcript {
                    text: String::new(),
                    replacements: Vec::new(),
                    session: s.dir.join("quick-start-session.sh"),
                    env: vec![
                        ("METIS".to_owned(), metis),
                        (
                            "AUTH_JWT_SECRET".to_owned(),
                            test_support::metis::jwt_secret().to_owned(),
                        ),
                    ],
                };
                t.redact(s.dir.display().to_string(), "[e2e-dir]");
                t.redact(root, "$PWD");
                anyhow::ensure!(
                    bin.ends_with("target/debug/metis-api") || bin.ends_with("debug/metis-api"),
                    "the quick start runs target/debug/metis-api, the harness has {}",
                    bin.display()
                );
                let json = "python3 -m json.tool";
                let auth = "-H \"authorization: Bearer $TOKEN\"";

                // Is it up?
                t.sh(&format!("curl -s \"$METIS/readyz\" | {json}"))?;
                // A token for alice, as the API's own subcommand mints it.
                t.sh(&format!(
                    "TOKEN=$({} token alice)",
                    bin.display()
                        .to_string()
                        .replace(&format!("{}/", test_support::workspace_root().display()), "")
                ))?;
                // Submit a run; its id is the next commands' $RUN.
                // The request body as a reader would type it: two fields a line.
                let fields: Vec<String> = run_body("ok.sh")
                    .as_object()
                    .context("a run body is an object")?
                    .iter()
                    .map(|(k, v)| format!("\"{k}\": {v}"))
                    .collect();
                let body = format!(
                    "{{{}}}",
                    fields
                        .chunks(2)
                        .map(|pair| pair.join(", "))
                        .collect::<Vec<_>>()
                        .join(",\n        ")
                )
                .replace(
                    &test_support::workspace_root().display().to_string(),
                    "'\"$PWD\"'",
                );
                t.sh(&format!(
                    "RUN=$(curl -s -XPOST \"$METIS/runs\" {auth} \\\n    \
                     -H 'content-type: application/json' \\\n    -d '{body}' \\\n    \
                     | python3 -c 'import json, sys; print(json.load(sys.stdin)[\"run_id\"])')"
                ))?;
                let run = t.sh("echo \"$RUN\"")?.trim().to_owned();
                anyhow::ensure!(run.len() == 36, "a run id, not {run:?}");
                t.redact(run.clone(), "[run#1]");
                // Follow it to the end (a reader polls the status; the harness waits for it).
                s.client.wait_for_state(&run, &["COMPLETE"], DEADLINE).await?;
                for id in engine_ids(s).await? {
                    t.redact(id, "[engine#1]");
                }
                // The transcript's first lines were recorded before the run id was known.
                t.text = t.clean(&t.text.clone());
                t.sh(&format!("curl -s \"$METIS/runs/$RUN/status\" {auth} | {json}"))?;
                t.sh(&format!("curl -s \"$METIS/runs/$RUN\" {auth} | {json}"))?;
                t.sh(&format!(
                    "curl -s \"$METIS/runs/$RUN/logs?stream=stdout\" {auth} | {json}"
                ))?;

                let engines = engine_ids(s).await?;
                let mut settings = insta::Settings::clone_current();
                settings.set_snapshot_path("../../snapshots/transcripts");
                settings.set_prepend_module_to_snapshot(false);
                settings.set_omit_expression(true);
                settings.set_description(
                    "what the quick start's commands printed (the book shows it); regenerate with `just review`",
                );
                let text = t.text.trim_end().to_owned() + "\n";
                settings.bind(|| insta::assert_snapshot!("quick_start", text));
                check_tree(s, "quick_start", 1, &engines).await?;
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: quick_start

#[test]
fn seq_numbers_are_redacted_and_nothing_else() {
    assert_eq!(
        redact_seq("{\"seq\": 12, \"x\": 3, \"seq\": \"a\"}"),
        "{\"seq\": [seq:int], \"x\": 3, \"seq\": \"a\"}"
    );
}

#[test]
fn timestamps_are_redacted_and_nothing_else() {
    assert_eq!(
        redact_timestamps("start 2026-12-01T20:28:01.123456Z end 2026-12-01 20:28:02+00:00 x"),
        "start [timestamp] end [timestamp] x"
    );
    assert_eq!(redact_timestamps("exit 0, 2026 runs"), "exit 0, 2026 runs");
}
