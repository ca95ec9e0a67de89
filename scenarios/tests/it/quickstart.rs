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

use anyhow::Context as _;

use crate::support::{DEADLINE, check_tree, engine_ids, run_body, stack};
use crate::transcript::Transcript;

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
                let mut t = Transcript::new(
                    Some(s.dir.join("quick-start-session.sh")),
                    vec![
                        ("METIS".to_owned(), metis),
                        (
                            "AUTH_JWT_SECRET".to_owned(),
                            test_support::metis::jwt_secret().to_owned(),
                        ),
                    ],
                );
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
                // The page's path; the test runs the harness's binary wherever the target
                // folder is (a shard runs from an extracted archive).
                t.show_as(bin.display().to_string(), "target/debug/metis-api");
                t.sh(&format!("TOKEN=$({} token alice)", bin.display()))?;
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
                t.assert_snapshot(
                    "quick_start",
                    "what the quick start's commands printed (the book shows it); regenerate with `just review`",
                );
                check_tree(s, "quick_start", 1, &engines).await?;
                Ok(())
            })
        })
        .await
}
// ANCHOR_END: quick_start

/// The `sh` blocks of the book's quick start, in order.
fn quick_start_blocks() -> anyhow::Result<Vec<String>> {
    let page =
        std::fs::read_to_string(test_support::workspace_root().join("book/src/quickstart.md"))?;
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in page.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l.starts_with("```sh") => current = Some(String::new()),
            (Some(b), l) if l.starts_with("```") => {
                blocks.push(std::mem::take(b));
                current = None;
            }
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    Ok(blocks)
}

/// The commands of the quick start's transcript (what follows each `$ `, with the lines a
/// command continues on).
fn transcript_commands() -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(
        test_support::workspace_root().join("scenarios/snapshots/transcripts/quick_start.snap"),
    )?;
    let body = text.splitn(3, "---\n").nth(2).unwrap_or_default();
    let mut commands: Vec<String> = Vec::new();
    let mut open = false;
    for line in body.lines() {
        if let Some(cmd) = line.strip_prefix("$ ") {
            commands.push(cmd.to_owned());
            open = true;
        } else if open
            && commands
                .last()
                .is_some_and(|c| c.ends_with('\\') || c.matches('\'').count() % 2 == 1)
        {
            if let Some(last) = commands.last_mut() {
                last.push('\n');
                last.push_str(line);
            }
        } else {
            open = false;
        }
    }
    Ok(commands)
}

/// **What it pins.** The book's quick start as a new reader pastes it: its first block (build,
/// NATS, the receiver, an engine and the API on their documented ports), then every command
/// of the transcript, then the "see its trace" block, in one fresh `bash`, with nothing but
/// the checkout — in a network, PID and mount namespace of its own, so the documented ports
/// (4222, 4317, 8080, …) and `/tmp/metis-nats` (a private tmpfs there; the checkout may itself
/// live under `/tmp`) are the test's alone and everything it started dies with it.
///
/// **Why it matters.** A newcomer's first ten minutes are the quick start; a command that does
/// not run as written loses them. The `quick_start` scenario pins what the requests print; this
/// one proves the page's own setup starts a working stack.
///
/// **If this changes.** A failure prints the shell's output: the line that no longer runs is
/// the book's to fix (or the code's, if the quick start was right).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_runs_as_written_in_a_fresh_shell() -> anyhow::Result<()> {
    let blocks = quick_start_blocks()?;
    anyhow::ensure!(
        blocks.len() >= 2,
        "the quick start's setup and trace blocks: {blocks:?}"
    );
    let (setup, trace) = (&blocks[0], &blocks[1]);
    let root = test_support::workspace_root();
    let nats = test_support::nats_server_bin()?;
    let nats_dir = nats
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut script = String::from(
        "set -eo pipefail\n\
         mkdir -p /tmp/metis-nats && mount -t tmpfs tmpfs /tmp/metis-nats\n\
         ip link set lo up\n\
         trap 'rm -f spans.json; kill $(jobs -p) 2>/dev/null || true' EXIT\n",
    );
    script.push_str(setup);
    // A reader waits until it answers (the transcript's first command asks); so does the test,
    // with a deadline: 30 s for the API, then for the engine's config.
    script.push_str(
        "for i in $(seq 150); do curl -sf \"$METIS/readyz\" >/dev/null && break; sleep 0.2; done\n\
         for i in $(seq 150); do curl -s \"$METIS/service-info\" | grep -q '\"generic\"' && break; sleep 0.2; done\n",
    );
    for command in transcript_commands()? {
        script.push_str(&command);
        script.push('\n');
        if command.starts_with("RUN=") {
            // "Poll …/status until it is terminal", as the page says.
            script.push_str(
                "for i in $(seq 150); do curl -s \"$METIS/runs/$RUN/status\" -H \"authorization: Bearer $TOKEN\" | grep -q COMPLETE && break; sleep 0.2; done\n",
            );
        }
    }
    script.push_str(trace);
    script.push_str("grep -q workflow_run spans.json\necho QUICK-START-OK\n");
    let mut cmd = tokio::process::Command::new("unshare");
    cmd.args([
        "--net",
        "--pid",
        "--mount",
        "--fork",
        "--kill-child",
        "--mount-proc",
    ])
    .arg("bash")
    .arg("-c")
    .arg(&script)
    .current_dir(&root)
    .env(
        "PATH",
        format!("{nats_dir}:{}", std::env::var("PATH").unwrap_or_default()),
    )
    .env_remove("METIS")
    .env_remove("NATS_URL")
    .kill_on_drop(true);
    let out = tokio::time::timeout(std::time::Duration::from_secs(600), cmd.output())
        .await
        .map_err(|_| anyhow::anyhow!("the quick start did not finish within 600 s"))??;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(
        out.status.success() && text.contains("QUICK-START-OK"),
        "the book's quick start did not run as written ({}); its output:\n{text}",
        out.status
    );
    Ok(())
}
