//! The scenario suite beyond one runner: build once, run in shards anywhere, merge into one
//! review (`just e2e-archive`, `just e2e-shard K N`, `just e2e-merge DIR...`).
//!
//! - [`archive`] builds the service binaries and a cargo-nextest archive of the scenarios
//!   (the binaries travel inside it, see `.config/nextest.toml`), and writes beside it what a
//!   shard machine needs and may lack: the list of tests, the `e2e` binary itself, the
//!   `cargo-nextest` binary, and (when Docker runs) the e2e images, saved.
//! - [`shard`] runs shard K of N from that folder against a checkout of the same revision,
//!   with no build: the archive is extracted into a folder of its own, the tests find the
//!   checkout through nextest's `--workspace-remap` and insta's `INSTA_WORKSPACE_ROOT`, and
//!   the services and artefacts through `CARGO_TARGET_DIR`. The tests are dealt out by
//!   measured duration ([`plan`]: longest first, each to the shard with the least time so far;
//!   `scenarios/shard-times.txt` holds the durations, a test without one counts as the median).
//!   The shard's folder gets its JUnit report, the snapshots insta saw referenced, the pending
//!   `.snap.new` files (moved out of the checkout), the scenarios' artefact folders, its plan
//!   and its exit status.
//! - [`merge`] reads every shard's folder and writes one `review.md`/`review.html` (the same
//!   review one unsharded run gives), one summary and one verdict. It fails when a shard
//!   failed or left no report, a test failed, a test of the archive ran in no shard (or in
//!   two), or a committed `.snap` was referenced by no shard (a deleted scenario's leftover:
//!   insta's own unreferenced check sees one shard only). It also writes `times.txt`, the
//!   measured durations, for `scenarios/shard-times.txt`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};

/// The nextest archive, in the archive folder.
pub const ARCHIVE: &str = "scenarios.tar.zst";
/// The tests the shards must cover together, one `binary test` a line.
pub const TESTS: &str = "tests.txt";
/// The e2e images (`docker save`), when Docker ran at archive time.
pub const IMAGES: &str = "images.tar";
/// The receiver image's `name:tag` in [`IMAGES`] (`E2E_RECEIVER_IMAGE` for the shards).
pub const RECEIVER_IMAGE: &str = "receiver-image.txt";
/// The measured durations the plan deals by, relative to the checkout.
pub const TIMES: &str = "scenarios/shard-times.txt";

/// Scenarios that never run in a shard, and why (they run where the toolchain is).
pub const UNSHARDED: &[(&str, &str)] = &[
    (
        "quickstart::the_quick_start_runs_as_written_in_a_fresh_shell",
        "builds the workspace with cargo, as the book's quick start says: it runs in the build job, which has the toolchain",
    ),
    (
        "sharding::three_shards_merge_into_the_review_of_one_run",
        "builds an archive of its own with cargo (it tests this very flow): it runs in the build job",
    ),
];

/// The scenarios that must not share a runner's cores with each other: the `heavy` test
/// group of `.config/nextest.toml`'s `e2e` profile runs them one at a time (a unit test holds
/// the file to these lists). By module prefix, then by name.
pub const HEAVY_MODULES: &[&str] = &["cluster::", "chaos::"];
/// See [`HEAVY_MODULES`].
pub const HEAVY_TESTS: &[&str] = &["engines::load_200_runs", "limits::cluster_fairness"];
/// Tests a shard runs at once (`test-threads` of the `e2e` profile).
pub const THREADS: usize = 3;

/// Whether `test` is in the heavy group.
#[must_use]
pub fn is_heavy(test: &str) -> bool {
    HEAVY_MODULES.iter().any(|m| test.starts_with(m)) || HEAVY_TESTS.contains(&test)
}

/// The heavy group's filterset, as `.config/nextest.toml` must spell it.
#[must_use]
pub fn heavy_filter() -> String {
    HEAVY_MODULES
        .iter()
        .map(|m| format!("test(/^{m}/)"))
        .chain(HEAVY_TESTS.iter().map(|t| format!("test(={t})")))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The nextest filterset of the tests a shard may run.
fn shardable_filter() -> String {
    let mut f = String::from("package(scenarios)");
    for (name, _) in UNSHARDED {
        let _ = write!(f, " & not test(={name})");
    }
    f
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    anyhow::ensure!(status.success(), "{what} failed: {status}");
    Ok(())
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Builds the archive folder `dir` (see the module docs); prints each step. `only`, a
/// nextest filterset, narrows the tests the shards must cover (the flow's own test runs a
/// few scenarios, not the suite).
pub fn archive(dir: &Path, only: Option<&str>) -> Result<()> {
    let root = test_support::workspace_root();
    let dir = &std::path::absolute(dir)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let t = Instant::now();
    println!("e2e archive: building the service binaries");
    run(
        test_support::cargo()
            .args(["build", "--locked", "-q", "-p", "api", "-p", "generic"])
            .args(["-p", "otlp-receiver", "-p", "spantree", "--bins"])
            .args(["-p", "harness", "--bin", "e2e"])
            .current_dir(&root),
        "cargo build",
    )?;
    println!("e2e archive: archiving the scenarios (cargo nextest archive)");
    run(
        test_support::cargo()
            .args(["nextest", "archive", "--locked", "-p", "scenarios"])
            .arg("--archive-file")
            .arg(dir.join(ARCHIVE))
            .current_dir(&root),
        "cargo nextest archive",
    )?;
    println!("e2e archive: listing the tests");
    let list = test_support::cargo()
        .args(["nextest", "list", "--archive-file"])
        .arg(dir.join(ARCHIVE))
        .args(["--workspace-remap"])
        .arg(&root)
        .args(["--message-format", "oneline", "-E"])
        .arg(match only {
            Some(f) => format!("{} & ({f})", shardable_filter()),
            None => shardable_filter(),
        })
        .current_dir(&root)
        .output()
        .context("cargo nextest list")?;
    anyhow::ensure!(
        list.status.success(),
        "cargo nextest list failed: {}",
        String::from_utf8_lossy(&list.stderr)
    );
    std::fs::write(dir.join(TESTS), &list.stdout)?;
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let e2e = test_support::target_dir().join(profile).join("e2e");
    std::fs::copy(&e2e, dir.join("e2e"))
        .with_context(|| format!("copying the e2e binary {}", e2e.display()))?;
    let nextest = which("cargo-nextest").context("cargo-nextest is not on PATH")?;
    std::fs::copy(&nextest, dir.join("cargo-nextest")).context("copying cargo-nextest")?;
    let local = std::env::var("E2E_BACKEND").is_ok_and(|b| b == "local");
    if !local && crate::backend::docker_available().is_ok() {
        println!("e2e archive: the e2e images (e2e images), saved (docker save)");
        let images = Command::new(dir.join("e2e"))
            .arg("images")
            .env("E2E_QUIET", "1")
            // The image this revision builds, not one a caller pointed at.
            .env_remove("E2E_RECEIVER_IMAGE")
            .current_dir(&root)
            .output()
            .context("e2e images")?;
        anyhow::ensure!(
            images.status.success(),
            "e2e images failed: {}",
            String::from_utf8_lossy(&images.stderr)
        );
        let receiver = String::from_utf8_lossy(&images.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("receiver image ").map(str::to_owned))
            .context("e2e images named no receiver image")?;
        std::fs::write(dir.join(RECEIVER_IMAGE), format!("{receiver}\n"))?;
        let images = Command::new("docker")
            .args([
                "images",
                "--format",
                "{{.Repository}}:{{.Tag}}",
                "metis-e2e/*",
            ])
            .output()
            .context("docker images")?;
        // The NATS images, and the one receiver image of this revision (older ones stay home).
        let names: Vec<String> = String::from_utf8_lossy(&images.stdout)
            .lines()
            .filter(|l| !l.ends_with(":<none>") && !l.contains("/otlp-receiver:"))
            .map(str::to_owned)
            .chain(std::iter::once(receiver))
            .collect();
        if !names.is_empty() {
            run(
                Command::new("docker")
                    .args(["save", "-o"])
                    .arg(dir.join(IMAGES))
                    .args(&names),
                "docker save",
            )?;
        }
    }
    let tests = std::fs::read_to_string(dir.join(TESTS))?.lines().count();
    println!(
        "e2e archive: {} ({tests} tests) in {:.1}s",
        dir.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The test names (`module::test`) of a [`TESTS`] file.
pub fn read_tests(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(str::to_owned)
        .collect()
}

/// Reads a durations file: `module::test seconds` a line, `#` comments.
pub fn read_times(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let (name, secs) = l.split_once(' ')?;
            Some((name.to_owned(), secs.trim().parse().ok()?))
        })
        .collect()
}

/// Deals `tests` to `n` shards by duration: longest first, each to the shard with the least
/// time so far (ties: the lower shard). A test without a duration counts as the median of the
/// known ones. A shard runs [`THREADS`] tests at once, but its heavy ones ([`is_heavy`]) one
/// after another, so a heavy test costs its shard its whole duration and any other a
/// [`THREADS`]th of it. Every test lands in exactly one shard; the same input gives the same
/// plan.
#[must_use]
pub fn plan(tests: &[String], times: &BTreeMap<String, f64>, n: usize) -> Vec<Vec<String>> {
    let n = n.max(1);
    let mut known: Vec<f64> = tests.iter().filter_map(|t| times.get(t)).copied().collect();
    known.sort_by(f64::total_cmp);
    let median = known.get(known.len() / 2).copied().unwrap_or(1.0);
    let mut weighted: Vec<(f64, &String)> = tests
        .iter()
        .map(|t| {
            let secs = times.get(t).copied().unwrap_or(median);
            let cost = if is_heavy(t) {
                secs
            } else {
                secs / THREADS as f64
            };
            (cost, t)
        })
        .collect();
    weighted.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let mut shards: Vec<(f64, Vec<String>)> = vec![(0.0, Vec::new()); n];
    for (secs, test) in weighted {
        let lightest = (0..n)
            .min_by(|a, b| shards[*a].0.total_cmp(&shards[*b].0).then(a.cmp(b)))
            .unwrap_or(0);
        shards[lightest].0 += secs;
        shards[lightest].1.push(test.clone());
    }
    shards.into_iter().map(|(_, t)| t).collect()
}

/// Every file under `dir` whose name ends with `suffix`, relative to `dir`, sorted.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix)
                && let Ok(rel) = p.strip_prefix(dir)
            {
                out.push(rel.to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// Every pending `*.snap.new` under `dir`, relative to it.
fn pending_files(dir: &Path) -> Vec<PathBuf> {
    files_ending(dir, ".snap.new")
}

/// `path` with its `..` and `.` resolved without the file system.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Moves `from` to `to` (a copy and a removal across file systems).
fn move_path(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if std::fs::rename(from, to).is_ok() {
        return Ok(());
    }
    run(
        Command::new("cp").arg("-a").arg(from).arg(to),
        "copying artefacts",
    )?;
    if from.is_dir() {
        std::fs::remove_dir_all(from)?;
    } else {
        std::fs::remove_file(from)?;
    }
    Ok(())
}

/// Runs shard `k` of `n` (1-based) from the archive folder `archive_dir` against the checkout
/// `source`, and fills `out` (see the module docs). `Ok(false)`: the shard ran and some test
/// failed.
pub fn shard(k: usize, n: usize, archive_dir: &Path, source: &Path, out: &Path) -> Result<bool> {
    shard_with(k, n, archive_dir, source, out, &[])
}

/// [`shard`], with more environment for the tests (the bench picks the backend this way).
pub fn shard_with(
    k: usize,
    n: usize,
    archive_dir: &Path,
    source: &Path,
    out: &Path,
    env: &[(&str, &str)],
) -> Result<bool> {
    anyhow::ensure!(
        (1..=n).contains(&k),
        "shard {k} of {n}: K must be between 1 and N"
    );
    let archive_dir = std::path::absolute(archive_dir)?;
    let source = std::path::absolute(source)?;
    let out = std::path::absolute(out)?;
    for needed in [ARCHIVE, TESTS, "cargo-nextest"] {
        anyhow::ensure!(
            archive_dir.join(needed).is_file(),
            "{} has no {needed}: build the archive folder with `just e2e-archive`",
            archive_dir.display()
        );
    }
    anyhow::ensure!(
        source.join("Cargo.lock").is_file() && source.join("scenarios/snapshots").is_dir(),
        "{} is not a checkout of this workspace (no Cargo.lock or scenarios/snapshots)",
        source.display()
    );
    let leftovers = pending_files(&source.join("scenarios/snapshots"));
    anyhow::ensure!(
        leftovers.is_empty(),
        "the checkout has pending snapshots from an earlier run ({}): remove them first \
         (`cargo insta reject`), or this shard would report them as its own",
        leftovers
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;
    let tests = read_tests(&std::fs::read_to_string(archive_dir.join(TESTS))?);
    let times = std::fs::read_to_string(source.join(TIMES))
        .map(|t| read_times(&t))
        .unwrap_or_default();
    let mine = plan(&tests, &times, n).swap_remove(k - 1);
    std::fs::write(out.join("plan.txt"), mine.join("\n") + "\n")?;
    let expected: f64 = mine
        .iter()
        .map(|t| times.get(t).copied().unwrap_or_default())
        .sum();
    println!(
        "e2e shard {k}/{n}: {} of {} tests, {expected:.0}s of test time by {TIMES}",
        mine.len(),
        tests.len()
    );
    if mine.is_empty() {
        std::fs::write(out.join("status.txt"), "0\n")?;
        std::fs::write(out.join("junit.xml"), "<testsuites/>\n")?;
        return Ok(true);
    }
    let mut env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    if let Ok(receiver) = std::fs::read_to_string(archive_dir.join(RECEIVER_IMAGE)) {
        env.push(("E2E_RECEIVER_IMAGE", receiver.trim().to_owned()));
    }
    let images = archive_dir.join(IMAGES);
    let local = std::env::var("E2E_BACKEND").is_ok_and(|b| b == "local");
    if images.is_file() && !local && crate::backend::docker_available().is_ok() {
        println!("e2e shard {k}/{n}: loading the e2e images");
        run(
            Command::new("docker")
                .args(["load", "-q", "-i"])
                .arg(&images),
            "docker load",
        )?;
    }
    let extract = Scratch::new(&format!("metis-shard-{}-{k}-of-{n}", std::process::id()))?;
    let filter = mine
        .iter()
        .map(|t| format!("test(={t})"))
        .collect::<Vec<_>>()
        .join(" | ");
    let target = extract.path().join("target");
    // nextest keeps its report under the (remapped) workspace's target/nextest.
    let junit = source.join("target/nextest/e2e/junit.xml");
    let _ = std::fs::remove_file(&junit);
    let t = Instant::now();
    let mut cmd = Command::new(archive_dir.join("cargo-nextest"));
    // Nothing of a surrounding cargo, insta or nextest run leaks in (a `cargo insta test`
    // sets where pending snapshots go, for one).
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("INSTA_") || key.starts_with("NEXTEST") || key.starts_with("CARGO_") {
            cmd.env_remove(&*key);
        }
    }
    let status = cmd
        .args(["nextest", "run", "--archive-file"])
        .arg(archive_dir.join(ARCHIVE))
        .arg("--extract-to")
        .arg(extract.path())
        .arg("--workspace-remap")
        .arg(&source)
        .args(["--profile", "e2e", "--no-fail-fast", "-E", &filter])
        .env("INSTA_WORKSPACE_ROOT", &source)
        .env("INSTA_UPDATE", "new")
        .env("INSTA_SNAPSHOT_REFERENCES_FILE", out.join("references.txt"))
        .env("CARGO_TARGET_DIR", &target)
        .env("METIS_SKIP_BUILD", "1")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(&source)
        .status()
        .context("running cargo-nextest from the archive folder")?;
    let secs = t.elapsed().as_secs_f64();
    let code = status.code().unwrap_or(-1);
    std::fs::write(out.join("status.txt"), format!("{code}\n"))?;
    std::fs::write(out.join("seconds.txt"), format!("{secs:.1}\n"))?;
    if junit.is_file() {
        std::fs::copy(&junit, out.join("junit.xml"))?;
    }
    let snapshots = source.join("scenarios/snapshots");
    for rel in pending_files(&snapshots) {
        move_path(&snapshots.join(&rel), &out.join("pending").join(&rel))?;
    }
    let artefacts = target.join("e2e");
    if artefacts.is_dir() {
        move_path(&artefacts, &out.join("e2e"))?;
    }
    println!(
        "e2e shard {k}/{n}: {} in {secs:.1}s; its report is in {}",
        if status.success() { "passed" } else { "FAILED" },
        out.display()
    );
    Ok(status.success())
}

/// A folder of its own under the temporary folder, removed when dropped (also when the shard
/// fails).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One test case of a JUnit report.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// `module::test`.
    pub name: String,
    /// Seconds.
    pub time: f64,
    /// Whether it failed (a `<failure>` or `<error>`).
    pub failed: bool,
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(
        tag[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// The test cases of a JUnit report (as cargo-nextest writes it).
#[must_use]
pub fn junit_cases(xml: &str) -> Vec<Case> {
    let mut out = Vec::new();
    for chunk in xml.split("<testcase").skip(1) {
        let Some(head_end) = chunk.find('>') else {
            continue;
        };
        let head = &chunk[..head_end];
        let body = if head.ends_with('/') {
            ""
        } else {
            chunk[head_end..]
                .split("</testcase>")
                .next()
                .unwrap_or_default()
        };
        let Some(name) = attr(head, "name") else {
            continue;
        };
        out.push(Case {
            name,
            time: attr(head, "time")
                .and_then(|t| t.parse().ok())
                .unwrap_or_default(),
            failed: body.contains("<failure") || body.contains("<error"),
        });
    }
    out
}

/// What [`merge`] found.
#[derive(Debug, Default)]
pub struct Merged {
    /// Every reason the merged run fails; empty when it passes.
    pub failures: Vec<String>,
    /// Snapshots to review (changed, new, not produced).
    pub pending: usize,
    /// Tests run, over all shards.
    pub tests: usize,
}

/// Merges the shard folders `shards` (see the module docs) for the checkout `source` and the
/// archive folder's [`TESTS`] list into `out`: `review.md`, `review.html`, `summary.md`,
/// `times.txt`, the scenarios' artefacts under `e2e/` and the pending snapshots under
/// `snapshots/`. `link` names the run's artefacts in the comment.
pub fn merge(
    shards: &[PathBuf],
    tests_file: &Path,
    source: &Path,
    out: &Path,
    link: Option<&str>,
) -> Result<Merged> {
    let mut merged = Merged::default();
    if out.exists() {
        std::fs::remove_dir_all(out)?;
    }
    let snapshots_out = out.join("snapshots");
    std::fs::create_dir_all(&snapshots_out)?;
    let committed = source.join("scenarios/snapshots");
    for entry in std::fs::read_dir(&committed)
        .with_context(|| format!("reading {}", committed.display()))?
        .flatten()
    {
        let p = entry.path();
        if p.extension().is_some_and(|x| x == "snap") {
            std::fs::copy(&p, snapshots_out.join(entry.file_name()))?;
        }
    }
    let expected: BTreeSet<String> = read_tests(
        &std::fs::read_to_string(tests_file)
            .with_context(|| format!("reading {}", tests_file.display()))?,
    )
    .into_iter()
    .collect();
    let mut ran: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut times: BTreeMap<String, f64> = BTreeMap::new();
    let mut referenced: BTreeSet<PathBuf> = BTreeSet::new();
    let mut produced: Vec<String> = Vec::new();
    for dir in shards {
        let label = dir.display().to_string();
        match std::fs::read_to_string(dir.join("status.txt")) {
            Ok(s) if s.trim() == "0" => {}
            Ok(s) => merged
                .failures
                .push(format!("shard {label} exited with {}", s.trim())),
            Err(_) => merged.failures.push(format!(
                "shard {label} left no status.txt: it did not run to its end"
            )),
        }
        match std::fs::read_to_string(dir.join("junit.xml")) {
            Ok(xml) => {
                for case in junit_cases(&xml) {
                    if case.failed {
                        merged
                            .failures
                            .push(format!("{} failed (shard {label})", case.name));
                    }
                    times.insert(case.name.clone(), case.time);
                    ran.entry(case.name).or_default().push(label.clone());
                }
            }
            Err(_) => merged
                .failures
                .push(format!("shard {label} left no junit.xml")),
        }
        if let Ok(refs) = std::fs::read_to_string(dir.join("references.txt")) {
            for line in refs.lines() {
                // insta writes the path as it built it (`…/tests/it/../../snapshots/x.snap`).
                let path = lexical(Path::new(line));
                // (The shard's checkout may lie elsewhere than this one: by the last match.)
                if let Some((_, rel)) = path.to_string_lossy().rsplit_once("scenarios/snapshots/") {
                    referenced.insert(PathBuf::from(rel));
                }
            }
        }
        let pending_dir = dir.join("pending");
        for rel in pending_files(&pending_dir) {
            let to = snapshots_out.join(&rel);
            if to.exists() {
                merged.failures.push(format!(
                    "{} is pending from two shards (a test ran twice)",
                    rel.display()
                ));
            }
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(pending_dir.join(&rel), &to)?;
        }
        for e in std::fs::read_dir(dir.join("e2e"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().is_dir() {
                let name = e.file_name().to_string_lossy().into_owned();
                let to = out.join("e2e").join(&name);
                if !to.exists() {
                    std::fs::create_dir_all(out.join("e2e"))?;
                    run(
                        Command::new("cp").arg("-a").arg(e.path()).arg(&to),
                        "copying artefacts",
                    )?;
                }
                produced.push(name);
            }
        }
    }
    merged.tests = ran.len();
    for test in &expected {
        match ran.get(test).map(Vec::len) {
            None | Some(0) => merged.failures.push(format!(
                "{test} ran in no shard (the shards' plans do not cover the archive)"
            )),
            Some(1) => {}
            Some(n) => merged.failures.push(format!("{test} ran in {n} shards")),
        }
    }
    for test in ran.keys().filter(|t| !expected.contains(*t)) {
        merged.failures.push(format!(
            "{test} ran in a shard but is not in {}",
            tests_file.display()
        ));
    }
    for snap in files_ending(&committed, ".snap") {
        if !referenced.contains(&snap) {
            merged.failures.push(format!(
                "scenarios/snapshots/{} was referenced by no shard: a deleted or renamed \
                 scenario's leftover (`git rm` it), or its scenario failed before its snapshot",
                snap.display()
            ));
        }
    }
    // The review, as one unsharded run's: paths as the checkout names them.
    let mut pending = spantree::review::pending(
        &snapshots_out,
        Some(&produced),
        Some(&source.join("scenarios/tests/it")),
    )?;
    for p in &mut pending {
        if let Some(file) = p.path.file_name() {
            p.path = Path::new("scenarios/snapshots").join(file);
        }
        if let Some(code) = &p.code
            && let Ok(rel) = Path::new(code).strip_prefix(source)
        {
            p.code = Some(rel.display().to_string());
        }
    }
    merged.pending = pending.len();
    std::fs::write(
        out.join("review.md"),
        spantree::review::markdown(&pending, link),
    )?;
    std::fs::write(out.join("review.html"), spantree::review::html(&pending))?;
    let mut t = String::from(
        "# measured by `e2e merge`: copy to scenarios/shard-times.txt to rebalance the shards\n",
    );
    for (name, secs) in &times {
        let _ = writeln!(t, "{name} {secs:.1}");
    }
    std::fs::write(out.join("times.txt"), t)?;
    let mut summary = format!(
        "{} shard(s), {} of {} test(s) ran, {} snapshot(s) to review: {}\n",
        shards.len(),
        merged.tests,
        expected.len(),
        merged.pending,
        if merged.failures.is_empty() {
            "passed"
        } else {
            "FAILED"
        }
    );
    for f in &merged.failures {
        let _ = writeln!(summary, "- {f}");
    }
    std::fs::write(out.join("summary.md"), &summary)?;
    print!("e2e merge: {summary}");
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_covers_every_test_once_and_balances_by_time() {
        let tests: Vec<String> = ["a", "b", "c", "d", "e", "f"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let times = read_times("# header\na 60\nb 10\nc 10\nd 10\ne 10\n");
        let shards = plan(&tests, &times, 3);
        let mut all: Vec<&String> = shards.iter().flatten().collect();
        all.sort();
        assert_eq!(all, tests.iter().collect::<Vec<_>>(), "{shards:?}");
        // The 60-second test alone; f counts as the median (10).
        assert_eq!(shards[0], vec!["a".to_owned()], "{shards:?}");
        assert_eq!(plan(&tests, &times, 3), shards, "the same plan every time");
        assert_eq!(plan(&tests, &times, 1).len(), 1);
    }

    #[test]
    fn junit_cases_are_read_with_their_failures() {
        let xml = r#"<testsuites><testsuite name="scenarios::it">
<testcase name="run::run_completes" classname="scenarios::it" timestamp="x" time="1.250"/>
<testcase name="run::run_fails" classname="scenarios::it" time="2.5"><failure type="test failure">boom</failure></testcase>
<testcase name="a::&lt;b&gt;" classname="scenarios::it" time="0"></testcase>
</testsuite></testsuites>"#;
        let cases = junit_cases(xml);
        assert_eq!(cases.len(), 3, "{cases:?}");
        assert_eq!(cases[0].name, "run::run_completes");
        assert!((cases[0].time - 1.25).abs() < 1e-9);
        assert!(!cases[0].failed && cases[1].failed && !cases[2].failed);
        assert_eq!(cases[2].name, "a::<b>");
    }

    #[test]
    fn the_nextest_profile_spells_the_heavy_group_and_threads_as_the_plan_counts_them() {
        let toml =
            std::fs::read_to_string(test_support::workspace_root().join(".config/nextest.toml"))
                .unwrap();
        let filter = format!("filter = \"{}\"", heavy_filter());
        assert!(
            toml.contains(&filter),
            "{filter} not in .config/nextest.toml"
        );
        assert!(toml.contains(&format!("test-threads = {THREADS}")));
        assert!(toml.contains("heavy = { max-threads = 1 }"));
    }

    #[test]
    fn paths_resolve_without_the_file_system() {
        assert_eq!(
            lexical(Path::new("/w/scenarios/tests/it/../../snapshots/./a.snap")),
            Path::new("/w/scenarios/snapshots/a.snap")
        );
    }

    #[test]
    fn a_tests_file_is_read_as_nextest_lists_it() {
        let text = "scenarios::it cancel::cancel_queued\nscenarios::it run::run_fails\n";
        assert_eq!(
            read_tests(text),
            vec!["cancel::cancel_queued", "run::run_fails"]
        );
    }
}
