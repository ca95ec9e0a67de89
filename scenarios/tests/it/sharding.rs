//! The sharded suite's whole flow (`harness::shards`), on one machine: build the archive
//! folder once, copy it and the source tree (without `target/`) elsewhere, run the same
//! scenarios as one shard and as three shards in sequence from the copies, and merge each.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

/// Fast scenarios with snapshots: the flow is what is tested, not the suite.
const SCENARIOS: [&str; 6] = [
    "run::run_completes",
    "run::run_fails",
    "create::create_run",
    "cancel::cancel_queued",
    "invalid::invalid_request",
    "security::authenticated_run",
];

/// The tracked and untracked (not ignored) files of the checkout, copied to `to`: a source
/// tree without `target/`.
fn copy_source(to: &Path) -> Result<()> {
    let root = test_support::workspace_root();
    let files = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(&root)
        .output()
        .context("git ls-files")?;
    anyhow::ensure!(files.status.success(), "git ls-files failed");
    for rel in files.stdout.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let rel = Path::new(std::str::from_utf8(rel)?);
        let from = root.join(rel);
        // A file deleted in the working tree but still in the index.
        if !from.is_file() {
            continue;
        }
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().context("a parent")?)?;
        std::fs::copy(&from, &dest).with_context(|| format!("copying {}", rel.display()))?;
    }
    Ok(())
}

fn e2e(archive: &Path, source: &Path, args: &[&str]) -> Result<std::process::Output> {
    let out = Command::new(archive.join("e2e"))
        .args(args)
        .current_dir(source)
        .output()
        .with_context(|| format!("e2e {args:?}"))?;
    eprintln!(
        "e2e {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// **What it pins.** Building once and running anywhere: the archive folder (`e2e archive`)
/// runs from a copy, against a copy of the source without `target/`, with no build. (a) The
/// review merged from three shards is the review of one unsharded run, for a deliberately
/// changed snapshot (`run_completes.snap`, one event's message edited); (b) a leftover `.snap` of a
/// deleted scenario fails the merge and is named, though no shard could see it as
/// unreferenced alone; (c) the three shards' plans together are the archive's test list,
/// each test in one shard, and the merge counts every test once.
#[test]
fn three_shards_merge_into_the_review_of_one_run() -> Result<()> {
    let work = test_support::target_dir().join("e2e/sharding-flow");
    let _ = std::fs::remove_dir_all(&work);
    let built = work.join("built");
    let only = SCENARIOS
        .iter()
        .map(|t| format!("test(={t})"))
        .collect::<Vec<_>>()
        .join(" | ");
    harness::shards::archive(&built, Some(&only))?;
    // Elsewhere: a copy of the archive folder, a source tree without target/.
    let archive = work.join("archive");
    std::fs::create_dir_all(&archive)?;
    for e in std::fs::read_dir(&built)?.flatten() {
        std::fs::copy(e.path(), archive.join(e.file_name()))?;
    }
    let source = work.join("source");
    copy_source(&source)?;
    anyhow::ensure!(!source.join("target").exists());
    // The copy keeps the snapshots of the scenarios it runs, one of them changed on purpose,
    // and a deleted scenario's leftover.
    let snapshots = source.join("scenarios/snapshots");
    let keep: Vec<String> = SCENARIOS
        .iter()
        .map(|t| format!("{}.snap", t.rsplit("::").next().unwrap_or(t)))
        .collect();
    for e in std::fs::read_dir(&snapshots)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_file() && !keep.contains(&name) {
            std::fs::remove_file(e.path())?;
        }
    }
    let _ = std::fs::remove_dir_all(snapshots.join("transcripts"));
    let changed = snapshots.join("run_completes.snap");
    let text = std::fs::read_to_string(&changed)?;
    let said = "\"Run created and dispatched\"";
    anyhow::ensure!(text.contains(said), "run_completes.snap has {said}");
    std::fs::write(
        &changed,
        text.replacen(said, "\"Run created and queued\"", 1),
    )?;
    std::fs::copy(
        snapshots.join("run_fails.snap"),
        snapshots.join("a_deleted_scenario.snap"),
    )?;

    let tests_file = archive.join(harness::shards::TESTS).display().to_string();
    let run_and_merge = |shards: usize, label: &str| -> Result<(PathBuf, String)> {
        let mut dirs = Vec::new();
        for k in 1..=shards {
            let out = work.join(format!("{label}-{k}"));
            let o = out.display().to_string();
            let a = archive.display().to_string();
            let (k, n) = (k.to_string(), shards.to_string());
            e2e(
                &archive,
                &source,
                &["shard", &k, &n, "--archive", &a, "--out", &o],
            )?;
            dirs.push(o);
        }
        let merged = work.join(format!("{label}-merged"));
        let m = merged.display().to_string();
        let mut args = vec!["merge", "--tests", &tests_file, "--out", &m];
        args.extend(dirs.iter().map(String::as_str));
        let out = e2e(&archive, &source, &args)?;
        anyhow::ensure!(
            !out.status.success(),
            "the merge of {label} passed, with a changed snapshot and a leftover"
        );
        Ok((
            merged.clone(),
            std::fs::read_to_string(merged.join("summary.md"))?,
        ))
    };
    let (one, one_summary) = run_and_merge(1, "unsharded")?;
    let (three, three_summary) = run_and_merge(3, "sharded")?;

    // (a) The same review.
    let review = |d: &Path| std::fs::read_to_string(d.join("review.md"));
    let (r1, r3) = (review(&one)?, review(&three)?);
    anyhow::ensure!(
        r1 == r3,
        "the merged review differs from the unsharded one:\n--- one shard\n{r1}\n--- three shards\n{r3}"
    );
    anyhow::ensure!(
        r3.contains("run_completes") && r3.contains("Run created and queued"),
        "the review shows the changed snapshot:\n{r3}"
    );
    // (b) The leftover fails the merge, by name; so does the changed snapshot's scenario.
    for summary in [&one_summary, &three_summary] {
        anyhow::ensure!(
            summary.contains("a_deleted_scenario.snap was referenced by no shard")
                && summary.contains("run::run_completes failed"),
            "{summary}"
        );
        anyhow::ensure!(!summary.contains("ran in"), "{summary}");
    }
    // (c) The plans cover the list once; every test ran once.
    let listed: Vec<String> = harness::shards::read_tests(&std::fs::read_to_string(&tests_file)?);
    let mut planned: Vec<String> = Vec::new();
    for k in 1..=3 {
        let plan = std::fs::read_to_string(work.join(format!("sharded-{k}/plan.txt")))?;
        planned.extend(plan.lines().filter(|l| !l.is_empty()).map(str::to_owned));
    }
    let (mut a, mut b) = (listed.clone(), planned);
    a.sort();
    b.sort();
    anyhow::ensure!(a == b, "the plans {b:?} are not the list {a:?}");
    let mut want: Vec<&str> = SCENARIOS.to_vec();
    want.sort_unstable();
    anyhow::ensure!(a == want, "the archive lists {a:?}, not {want:?}");
    anyhow::ensure!(
        three_summary.starts_with(&format!(
            "3 shard(s), {} of {} test(s) ran",
            a.len(),
            a.len()
        )),
        "{three_summary}"
    );
    Ok(())
}
