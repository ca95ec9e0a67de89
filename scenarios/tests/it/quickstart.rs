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
