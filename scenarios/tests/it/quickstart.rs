//! `quick_start`: the book's quick start, done for real. A user's first contact — is it up, a
//! token, one run submitted, followed to the end, its output read — recorded as a transcript
//! of the commands a reader types and the responses the service gave, and the trace that run
//! left. Both are snapshots: the book's quick start page shows them, so it can never show
//! output the service no longer gives.
//!
//! The transcript is redacted like the trees, so it is the same on every run: the run id is
//! `[run#1]`, the engine's id `[engine#1]`, timestamps `[timestamp]`, the checkout `$PWD`, the
//! scenario's folder `[e2e-dir]`; the API's ephemeral port reads as the documented `8080`.

use std::fmt::Write as _;

use anyhow::Context as _;
use serde_json::Value;

use crate::support::{DEADLINE, check_tree, engine_ids, run_body, stack};

/// The commands a reader types and what came back, redacted.
struct Transcript {
    text: String,
    base: String,
    replacements: Vec<(String, String)>,
    /// Applied to commands first: what a reader types instead (`$RUN`, `'"$PWD"'`).
    in_commands: Vec<(String, String)>,
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
        redact_timestamps(&s)
    }

    /// One command line (with a `$ ` prompt) and its output.
    fn record(&mut self, command: &str, output: &str) {
        let mut command = command.to_owned();
        for (from, to) in &self.in_commands {
            command = command.replace(from, to);
        }
        let command = self.clean(&command);
        let output = self.clean(output);
        let _ = writeln!(self.text, "$ {command}");
        if !output.is_empty() {
            let _ = writeln!(self.text, "{}", output.trim_end());
        }
        self.text.push('\n');
    }

    /// `curl` of `path` (GET, or POST with `body`), as a reader types it; returns the JSON.
    async fn curl(
        &mut self,
        client: &test_support::metis::ApiClient,
        path: &str,
        body: Option<&Value>,
        auth: bool,
    ) -> anyhow::Result<Value> {
        let reply = match body {
            Some(b) => client.post(path, b).await?,
            None => client.get(path).await?,
        };
        anyhow::ensure!(
            reply.status == 200,
            "{path}: {} {}",
            reply.status,
            reply.body
        );
        let mut command = String::from("curl -s");
        if body.is_some() {
            command.push_str(" -XPOST");
        }
        let _ = write!(command, " \"{}{path}\"", self.base);
        if auth {
            command.push_str(" -H \"authorization: Bearer $TOKEN\"");
        }
        if let Some(b) = body {
            let _ = write!(
                command,
                " \\\n    -H 'content-type: application/json' -d '{}'",
                serde_json::to_string(b)?
            );
        }
        let mut shown = reply.body.clone();
        // `seq` numbers the lines of both streams in the order they arrived, which differs
        // between runs (stdout and stderr are read concurrently).
        if let Some(lines) = shown.get_mut("lines").and_then(Value::as_array_mut) {
            for line in lines {
                line["seq"] = Value::from("[seq]");
            }
        }
        let output = serde_json::to_string_pretty(&shown)?;
        self.record(&command, &output);
        Ok(reply.body)
    }
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
                let mut t = Transcript {
                    text: String::new(),
                    base: "localhost:8080".to_owned(),
                    replacements: Vec::new(),
                    in_commands: vec![(root.clone(), "'\"$PWD\"'".to_owned())],
                };
                t.redact(s.client.base.clone(), "localhost:8080");
                t.redact(s.dir.display().to_string(), "[e2e-dir]");
                t.redact(root, "$PWD");

                // Is it up?
                t.curl(&s.client, "/readyz", None, false).await?;

                // A token for alice, as the API's own subcommand mints it.
                let out = std::process::Command::new(test_support::bin("metis-api")?)
                    .args(["token", "alice"])
                    .env("AUTH_JWT_SECRET", test_support::metis::jwt_secret())
                    .output()
                    .context("running metis-api token")?;
                anyhow::ensure!(out.status.success(), "metis-api token alice: {out:?}");
                let token = String::from_utf8(out.stdout)?.trim().to_owned();
                t.record("TOKEN=$(target/debug/metis-api token alice)", "");
                let client = s.client.with_authorization(&format!("Bearer {token}"));

                // Submit a run, follow it to the end, read it and its output.
                let created = t
                    .curl(&client, "/runs", Some(&run_body("ok.sh")), true)
                    .await?;
                let run = created["run_id"]
                    .as_str()
                    .context("a run id")?
                    .to_owned();
                t.redact(run.clone(), "[run#1]");
                t.in_commands.push((run.clone(), "$RUN".to_owned()));
                t.record("RUN=[run#1]    # the run_id it answered", "");
                s.client.wait_for_state(&run, &["COMPLETE"], DEADLINE).await?;
                for id in engine_ids(s).await? {
                    t.redact(id, "[engine#1]");
                }
                // The transcript's first response was recorded before the run id was known.
                t.text = t.clean(&t.text.clone());
                t.curl(&client, &format!("/runs/{run}/status"), None, true)
                    .await?;
                t.curl(&client, &format!("/runs/{run}"), None, true).await?;
                t.curl(
                    &client,
                    &format!("/runs/{run}/logs?stream=stdout"),
                    None,
                    true,
                )
                .await?;

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
fn timestamps_are_redacted_and_nothing_else() {
    assert_eq!(
        redact_timestamps("start 2026-12-01T20:28:01.123456Z end 2026-12-01 20:28:02+00:00 x"),
        "start [timestamp] end [timestamp] x"
    );
    assert_eq!(redact_timestamps("exit 0, 2026 runs"), "exit 0, 2026 runs");
}
