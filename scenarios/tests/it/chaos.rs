//! Seeded chaos (`harness::chaos`): fixed seeds play random schedules of workload steps and
//! faults against a real stack and must leave every invariant holding; and the checker and
//! the shrinker prove they find what they are for, on a bug planted for the purpose.

use std::time::Duration;

use harness::chaos::{
    Planted, Schedule, run, run_planted, shrink, shrink_planted, with_injected_bug,
};

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

/// A real bug in the engine, injected on purpose (`METIS_TEST_BUG=orphans`, debug builds only:
/// runs start without `--die-with-parent` and outside the group keeper, so a SIGKILLed engine
/// leaves its runs' processes behind) is found by the first seed whose short schedule kills the
/// engine while a long run is in flight on it; the same schedule holds without the bug; and
/// the shrinker cuts it down to a handful of steps — the long run and the kill — as a stub.
/// One engine, on the local backend, where the engine's processes are the host's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_finds_an_injected_engine_bug_and_the_shrinker_shrinks_it() -> anyhow::Result<()>
{
    let plain = || harness::StackOptions {
        engines: 1,
        backend: Some(harness::backend::Backend::Local),
        ..harness::StackOptions::default()
    };
    let buggy = || Some(with_injected_bug("orphans", plain()));
    // The first seed whose 5-second schedule kills the engine after creating a long run.
    let kills_a_long_run = |s: &Schedule| {
        let actions: Vec<String> = s.steps.iter().map(|s| s.to_string_action()).collect();
        let long = actions
            .iter()
            .position(|a| a.starts_with("create") && a.ends_with("gated.sh"));
        long.is_some_and(|at| actions[at..].iter().any(|a| a.starts_with("kill-engine")))
    };
    let (seed, schedule) = (1..200)
        .map(|seed| (seed, Schedule::generate(seed, Duration::from_secs(5))))
        .find(|(_, s)| kills_a_long_run(s))
        .ok_or_else(|| anyhow::anyhow!("no seed below 200 kills the engine during a long run"))?;
    let clean = run("chaos_injected_clean", &schedule, Some(plain())).await?;
    anyhow::ensure!(
        clean.violations.is_empty(),
        "seed {seed} without the bug: {:#?}",
        clean.violations
    );
    let found = run("chaos_injected", &schedule, buggy()).await?;
    anyhow::ensure!(
        found.violations.iter().any(|v| v.contains("outlived it")),
        "seed {seed}: the checker missed the orphaned processes: {:#?}\n{}",
        found.violations,
        schedule.to_text()
    );
    let reproducer = std::fs::read_to_string(found.dir.join("reproducer.txt"))?;
    let small = shrink(
        "chaos_injected_shrink",
        &Schedule::parse(&reproducer)?,
        buggy,
        24,
    )
    .await?;
    let text = small.to_text();
    anyhow::ensure!(
        small.steps.len() <= 4 && text.contains("gated.sh") && text.contains("kill-engine"),
        "seed {seed} shrunk from {} steps to:\n{text}",
        schedule.steps.len()
    );
    println!(
        "seed {seed}: shrunk from {} steps to {}:\n{text}",
        schedule.steps.len(),
        small.steps.len()
    );
    let stub = small.scenario_stub();
    anyhow::ensure!(stub.contains("kill-engine"), "{stub}");
    Ok(())
}
