//! The command is an argv, never a shell line: hostile parameter values reach the script as
//! single literal arguments.

use anyhow::Result;
use common::State;
use serde_json::json;

use crate::support::Bed;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_syntax_in_parameters_stays_literal() -> Result<()> {
    let bed = Bed::start("injection").await?;
    let mut engine = bed
        .engine("engine", &bed.config("engine.yaml", |_| {})?)
        .await?;
    let pwned = bed.dir.path().join("pwned");
    let attack = format!("x; touch {}", pwned.display());
    let id = bed
        .submit(bed.request(
            "args.sh",
            json!({"name": attack, "who": "$(id)", "quote": "a'b\"c `touch x`"}),
        ))
        .await?;

    let rec = bed.wait_terminal(id).await?;
    assert_eq!(rec.state, State::Complete, "{rec:#?}");
    let lines: Vec<String> = bed.logs(id).await?.into_iter().map(|l| l.line).collect();
    assert_eq!(
        lines,
        [
            "--name",
            attack.as_str(),
            "--quote",
            "a'b\"c `touch x`",
            "--who",
            "$(id)"
        ]
    );
    assert!(!pwned.exists(), "the injected command ran");
    assert!(
        !bed.workdir(&id).join("x").exists(),
        "the injected backticks ran"
    );
    engine.stop().await?;
    Ok(())
}
