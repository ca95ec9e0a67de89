//! Seeded chaos (`harness::chaos`): fixed seeds play random schedules of workload steps and
//! faults against a real stack and must leave every invariant holding; and the checker and
//! the shrinker prove they find what they are for, on a bug planted for the purpose.

use std::time::Duration;

use harness::chaos::{Planted, Schedule, run, run_planted, shrink_planted};

/// The fixed seeds of `just test`, on whichever backend `E2E_BACKEND` picks. `just chaos`
/// runs more of them, longer.
const SEEDS: [u64; 2] = [1, 2];

async fn seed_holds(seed: u64) -> anyhow::Result<()> {
    let schedule = Schedule::generate(seed, Duration::from_secs(10));
    let outcome = run(&format!("chaos_seed_{seed}"), &schedule, None).await?;
    anyhow::ensure!(
        outcome.violations.is_empty(),
        "seed {seed} broke invariants (reproducer: {}):\n{}\nschedule:\n{}",
        outcome.dir.join("reproducer.txt").display(),
        outcome.violations.join("\n"),
        schedule.to_text()
    );
    anyhow::ensure!(
        outcome.states.values().sum::<usize>() > 0,
        "seed {seed} accepted no run at all: {:?}",
        outcome.states
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_seed_1_holds_every_invariant() -> anyhow::Result<()> {
    seed_holds(SEEDS[0]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_seed_2_holds_every_invariant() -> anyhow::Result<()> {
    seed_holds(SEEDS[1]).await
}

/// A duplicated output line planted after the schedule (as an engine that published a line
/// twice would leave it) is found by the checker, and the shrinker cuts the schedule down to
/// the one step the bug needs — a completed `ok.sh` run — and writes it as a scenario stub.
/// On the local backend: this tests the checker and the shrinker, not a backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_finds_a_planted_bug_and_the_shrinker_shrinks_it() -> anyhow::Result<()> {
    let options = || {
        Some(harness::StackOptions {
            engines: 2,
            backend: Some(harness::backend::Backend::Local),
            ..harness::StackOptions::default()
        })
    };
    // The first seed whose 3-second schedule creates an ok.sh run, among a few faults.
    let creates_ok = |s: &harness::chaos::Step| {
        let a = s.to_string_action();
        a.starts_with("create") && a.ends_with("ok.sh")
    };
    let schedule = (1..100)
        .map(|seed| Schedule::generate(seed, Duration::from_secs(3)))
        .find(|s| s.steps.iter().any(creates_ok) && s.steps.iter().any(|s| s.action.is_fault()))
        .ok_or_else(|| anyhow::anyhow!("no seed below 100 creates an ok.sh run among faults"))?;
    // Without the bug, the schedule is fine; with it, the checker names the run.
    let clean = run("chaos_planted_clean", &schedule, options()).await?;
    anyhow::ensure!(clean.violations.is_empty(), "{:#?}", clean.violations);
    let found = run_planted(
        "chaos_planted",
        &schedule,
        options(),
        Some(Planted::DuplicateLogLine),
    )
    .await?;
    anyhow::ensure!(
        found.violations.iter().any(|v| v.contains("output lines")),
        "the checker missed the duplicated line: {:#?}",
        found.violations
    );
    anyhow::ensure!(
        found.dir.join("reproducer.txt").is_file(),
        "a violation writes a reproducer"
    );
    let small = shrink_planted(
        "chaos_planted_shrink",
        &schedule,
        options,
        20,
        Some(Planted::DuplicateLogLine),
    )
    .await?;
    anyhow::ensure!(
        small.steps.len() == 1 && small.steps[0].to_string_action().ends_with("ok.sh"),
        "shrunk from {} steps to:\n{}",
        schedule.steps.len(),
        small.to_text()
    );
    let stub = small.scenario_stub();
    anyhow::ensure!(stub.contains("harness::chaos::run("), "{stub}");
    Ok(())
}
