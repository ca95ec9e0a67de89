//! Transcripts: shell commands run for real, in `bash` in the checkout, recorded with a `$ `
//! prompt and what they printed, redacted so the same run gives the same text — the quick
//! start's and the troubleshooting page's examples. A transcript is a snapshot of its own in
//! `scenarios/snapshots/transcripts/`, which the book quotes with `{{#transcript NAME}}`.
//!
//! Redaction: literal replacements the test names (a run id → `[run#1]`, a port → `$PORT`),
//! then RFC 3339 timestamps → `[timestamp]` and an output line's arrival number →
//! `"seq": [seq:int]`.

use std::fmt::Write as _;

use anyhow::Context as _;

/// The commands a reader types and what came back, redacted.
pub struct Transcript {
    pub text: String,
    replacements: Vec<(String, String)>,
    /// The shell session: the variables commands set so far (`declare -p` output).
    session: Option<std::path::PathBuf>,
    /// What the reader's shell has already (set by an earlier step the page shows).
    env: Vec<(String, String)>,
    /// How a command's text is shown where the test had to run it differently (a temp file
    /// in place of the path a user has).
    shown_as: Vec<(String, String)>,
}

impl Transcript {
    /// A transcript whose commands share the variables in `session` (a file), with `env`.
    pub fn new(session: Option<std::path::PathBuf>, env: Vec<(String, String)>) -> Self {
        let mut t = Self {
            text: String::new(),
            replacements: Vec::new(),
            session,
            env,
            shown_as: Vec::new(),
        };
        t.redact(test_support::workspace_root().display().to_string(), "$PWD");
        t
    }

    /// Commands show `to` where they ran `from` (the page shows a user's path, the test ran a
    /// temp file).
    pub fn show_as(&mut self, from: impl Into<String>, to: impl Into<String>) {
        self.shown_as.push((from.into(), to.into()));
    }

    /// The literal `from` reads as `to` in every later line.
    pub fn redact(&mut self, from: impl Into<String>, to: impl Into<String>) {
        let from = from.into();
        if !from.is_empty() {
            self.replacements.push((from, to.into()));
            self.replacements
                .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        }
    }

    /// `s` with every replacement, timestamps and `seq` numbers redacted.
    pub fn clean(&self, s: &str) -> String {
        let mut s = s.to_owned();
        for (from, to) in &self.replacements {
            s = s.replace(from, to);
        }
        redact_hex_ids(&redact_seq(&redact_timestamps(&s)))
    }

    /// Runs `command` in `bash` in the checkout (in the session, if any) and returns its exit
    /// status and what it printed (stdout, then stderr).
    fn run(&self, command: &str) -> anyhow::Result<(std::process::ExitStatus, String)> {
        let script = match &self.session {
            Some(session) => {
                let session = session.display().to_string();
                format!(
                    "set -o pipefail\n[ -f '{session}' ] && source '{session}'\n{command}\n\
                     status=$?\ndeclare -p TOKEN RUN 2>/dev/null > '{session}.new' || true\n\
                     mv '{session}.new' '{session}'\nexit $status\n"
                )
            }
            None => format!("set -o pipefail\n{command}\n"),
        };
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(test_support::workspace_root())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .with_context(|| format!("running bash for `{command}`"))?;
        Ok((
            out.status,
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    }

    fn record(&mut self, command: &str, output: &str, footer: Option<String>) {
        let shown = self.clean(output);
        let mut command = command.to_owned();
        for (from, to) in &self.shown_as {
            command = command.replace(from, to);
        }
        let _ = writeln!(self.text, "$ {command}");
        if !shown.trim().is_empty() {
            let _ = writeln!(self.text, "{}", shown.trim_end());
        }
        if let Some(f) = footer {
            let _ = writeln!(self.text, "{f}");
        }
        self.text.push('\n');
    }

    /// Runs `command`, which must succeed (a failure fails the test, naming the command),
    /// records it and returns what it printed.
    pub fn sh(&mut self, command: &str) -> anyhow::Result<String> {
        let (status, output) = self.run(command)?;
        anyhow::ensure!(
            status.success(),
            "the command `{command}` failed ({status}):\n{output}"
        );
        self.record(command, &output, None);
        Ok(output)
    }

    /// Runs `command`, which must fail (a success fails the test), records it with its exit
    /// status and returns what it printed: what a user sees when that goes wrong.
    pub fn sh_fails(&mut self, command: &str) -> anyhow::Result<String> {
        let (status, output) = self.run(command)?;
        anyhow::ensure!(
            !status.success(),
            "the command `{command}` was to fail, and it succeeded:\n{output}"
        );
        let code = status
            .code()
            .map_or_else(|| format!("{status}"), |c| c.to_string());
        self.record(command, &output, Some(format!("# exit status {code}")));
        Ok(output)
    }

    /// Runs `command`, which must fail, and records it with what `keep` keeps of its output
    /// (the part a user reads, without a test runner's frame around it) and its exit status.
    pub fn run_keep(
        &mut self,
        command: &str,
        keep: impl FnOnce(&str) -> String,
    ) -> anyhow::Result<String> {
        let (status, output) = self.run(command)?;
        anyhow::ensure!(
            !status.success(),
            "the command `{command}` was to fail, and it succeeded:\n{output}"
        );
        let kept = keep(&output);
        let code = status
            .code()
            .map_or_else(|| format!("{status}"), |c| c.to_string());
        self.record(command, &kept, Some(format!("# exit status {code}")));
        Ok(kept)
    }

    /// Compares the transcript with `scenarios/snapshots/transcripts/<name>.snap`.
    pub fn assert_snapshot(&self, name: &str, description: &str) {
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path("../../snapshots/transcripts");
        settings.set_prepend_module_to_snapshot(false);
        settings.set_omit_expression(true);
        settings.set_description(description);
        let text = self.text.trim_end().to_owned() + "\n";
        settings.bind(|| insta::assert_snapshot!(name, text));
    }
}

/// `"seq": N` → `"seq": [seq:int]`: a line's number counts the lines of both output streams in
/// the order they arrived, which differs between runs (they are read concurrently).
pub fn redact_seq(s: &str) -> String {
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

/// OpenTelemetry ids as tools print them — 32 lowercase hex digits (a trace id) →
/// `[trace-id]`, 16 (a span id) → `[span-id]` — where they stand alone.
pub fn redact_hex_ids(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let hex = word
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        match (hex, word.len()) {
            (true, 32) => out.push_str("[trace-id]"),
            (true, 16) => out.push_str("[span-id]"),
            _ => out.push_str(word),
        }
        word.clear();
    };
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// RFC 3339 timestamps → `[timestamp]` (the only time values the API and the logs print).
pub fn redact_timestamps(s: &str) -> String {
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

#[test]
fn seq_numbers_are_redacted_and_nothing_else() {
    assert_eq!(
        redact_seq("{\"seq\": 12, \"x\": 3, \"seq\": \"a\"}"),
        "{\"seq\": [seq:int], \"x\": 3, \"seq\": \"a\"}"
    );
}

#[test]
fn hex_ids_are_redacted_and_nothing_else() {
    assert_eq!(
        redact_hex_ids(
            "span dec0ff50bcb4887e of b906c0af72c42d9abab349e25c47b9b2, not deadbeef or 0190c4c2-6d44"
        ),
        "span [span-id] of [trace-id], not deadbeef or 0190c4c2-6d44"
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
