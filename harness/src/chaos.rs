//! Seeded chaos: a random schedule of workload steps and fault verbs, run against a real stack
//! and checked by invariants, replayable from its seed or its saved schedule, and shrinkable.
//!
//! A [`Schedule`] is generated from a seed by a small deterministic generator (splitmix64, so
//! the same seed gives the same schedule on every machine and every version of every crate):
//! steps at offsets in milliseconds, each a workload step (a user creates a run of a short
//! workflow, `ok.sh`, or a long one, `gated.sh`, in flight until the schedule is over; cancels
//! one of their runs; lists their runs) or a fault (engine kill, engine pause for a while, NATS
//! restart, NATS freeze for a while — on a cluster, one server killed or cut off for a while —,
//! the collector refusing exports or answering late, the API killed for a while). Its text form — one step a line, `+1200ms create bob ok.sh` — is
//! printed up front, saved as `schedule.txt` in the run's artefact folder, and read back by
//! [`Schedule::parse`].
//!
//! [`run`] brings up a stack (two engines), plays the schedule (pacing steps by their offsets;
//! the pacing is the workload, not synchronisation), then heals: every paused engine resumed,
//! NATS thawed, the API started again, every killed engine replaced. [`check`] then verifies, on what the services
//! answer and the spans they exported:
//!
//! 1. every run a client was told was accepted, and every stored run, reaches a terminal
//!    state (the history checker of [`crate::fault`]);
//! 2. a run that ended COMPLETE ran once: exactly one `workflow_run` span with `state=COMPLETE`
//!    in its traces, and exactly the output lines its workflow prints, each once;
//! 3. the trace of every COMPLETE run is connected: no orphan span in it, unless the schedule
//!    made the collector refuse exports or killed the API (then the gap is attributed to that
//!    fault: those spans were lost on purpose);
//! 4. the service answers again after healing (`/readyz`);
//! 5. no process outlives its run or its engine: every process below an engine the schedule
//!    killed is gone within 5 s (checked before the long runs' gate opens, while they would
//!    still be waiting), and once every run is over no process of a long run (`gated.sh`,
//!    whose command line names the stack's gate) is left.
//!
//! On a cluster (`topology cluster`) the NATS faults are one server killed or cut off for a
//! while (docker: off the stack's network; local: frozen), one at a time, so the cluster
//! keeps its quorum.
//!
//! A violation names the seed and the first offending run, draws that run's traces (orphans
//! under `[missing parent]`), and [`run`] writes `reproducer.txt` (the schedule, then the
//! violation as comments): `e2e chaos --schedule reproducer.txt` replays it, `e2e chaos
//! --shrink reproducer.txt` removes steps while the violation still reproduces and writes the
//! minimal schedule and a scenario stub that plays it with the fault verbs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::fault::{History, Told};
use crate::topology::Topology;
use crate::{Stack, StackOptions};

/// The users of the workload.
pub const USERS: [&str; 3] = ["alice", "bob", "carol"];

/// What each workflow of the workload prints when it completes, line by line (`stream: text`):
/// `ok.sh` at once; `gated.sh` once the schedule is over and the harness opens its gate.
const LINES: [(&str, &[&str]); 2] = [
    (
        "ok.sh",
        &[
            "stdout: ok: starting",
            "stderr: ok: a warning on stderr",
            "stdout: ok: working",
            "stderr: ok: done",
        ],
    ),
    (
        "gated.sh",
        &["stdout: gated: waiting", "stdout: gated: done"],
    ),
];

/// One thing the schedule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A user creates a run of a fixture workflow (`ok.sh`, short; `gated.sh`, in flight until
    /// the schedule ends).
    Create {
        /// Who.
        user: String,
        /// The fixture in `fixtures/workflows/`.
        workflow: String,
    },
    /// A user cancels one of their runs.
    Cancel {
        /// Who.
        user: String,
        /// Which: counted from 0, modulo how many they have.
        nth: usize,
    },
    /// A user lists their runs.
    List {
        /// Who.
        user: String,
    },
    /// SIGKILL to an engine; it is replaced when the schedule ends.
    KillEngine {
        /// 0 or 1.
        index: usize,
    },
    /// SIGSTOP to an engine for a while, then SIGCONT.
    PauseEngine {
        /// 0 or 1.
        index: usize,
        /// For how long.
        ms: u64,
    },
    /// NATS killed and started again with its data.
    RestartNats,
    /// NATS frozen for a while, then thawed.
    FreezeNats {
        /// For how long.
        ms: u64,
    },
    /// The receiver refuses the next exports.
    RefuseExports {
        /// How many.
        n: u64,
    },
    /// The receiver answers every export late from now on.
    SlowCollector {
        /// How late.
        ms: u64,
    },
    /// SIGKILL to the API; it is started again on its port after a while.
    KillApi {
        /// How long it stays down.
        ms: u64,
    },
    /// SIGKILL to one server of a cluster; started again with its data after a while.
    KillNatsServer {
        /// 0, 1 or 2.
        index: usize,
        /// How long it stays down.
        ms: u64,
    },
    /// One server of a cluster cut off (docker: off the network; local: frozen), then back.
    PartitionNatsServer {
        /// 0, 1 or 2.
        index: usize,
        /// For how long.
        ms: u64,
    },
}

impl Action {
    /// Whether this is a fault (not a workload step).
    #[must_use]
    pub fn is_fault(&self) -> bool {
        !matches!(
            self,
            Self::Create { .. } | Self::Cancel { .. } | Self::List { .. }
        )
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Create { user, workflow } => write!(f, "create {user} {workflow}"),
            Self::Cancel { user, nth } => write!(f, "cancel {user} {nth}"),
            Self::List { user } => write!(f, "list {user}"),
            Self::KillEngine { index } => write!(f, "kill-engine {index}"),
            Self::PauseEngine { index, ms } => write!(f, "pause-engine {index} {ms}ms"),
            Self::RestartNats => write!(f, "restart-nats"),
            Self::FreezeNats { ms } => write!(f, "freeze-nats {ms}ms"),
            Self::RefuseExports { n } => write!(f, "refuse-exports {n}"),
            Self::SlowCollector { ms } => write!(f, "slow-collector {ms}ms"),
            Self::KillApi { ms } => write!(f, "kill-api {ms}ms"),
            Self::KillNatsServer { index, ms } => write!(f, "kill-nats-server {index} {ms}ms"),
            Self::PartitionNatsServer { index, ms } => {
                write!(f, "partition-nats-server {index} {ms}ms")
            }
        }
    }
}

/// One step: an action at an offset from the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Milliseconds after the schedule starts.
    pub at_ms: u64,
    /// What happens.
    pub action: Action,
}

impl Step {
    /// The action as the schedule's text writes it (`create bob ok.sh`).
    #[must_use]
    pub fn to_string_action(&self) -> String {
        self.action.to_string()
    }
}

/// A schedule: where it came from and its steps, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The seed it was generated from (kept through shrinking, for the record).
    pub seed: u64,
    /// The NATS it runs against: a cluster's schedule also kills and cuts off single servers.
    pub topology: Topology,
    /// The steps, sorted by offset.
    pub steps: Vec<Step>,
}

/// splitmix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

impl Schedule {
    /// The schedule of `seed` on one NATS server (see [`Schedule::generate_for`]).
    #[must_use]
    pub fn generate(seed: u64, duration: Duration) -> Self {
        Self::generate_for(seed, duration, Topology::Single)
    }

    /// The schedule of `seed` for `topology`: workload steps and faults over `duration`,
    /// about one step every 400 ms, a fault in one of four. A NATS fault is a restart or a
    /// freeze of the server on one server, a server killed or cut off in a cluster.
    #[must_use]
    pub fn generate_for(seed: u64, duration: Duration, topology: Topology) -> Self {
        let mut rng = Rng(seed);
        let total = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let mut at = 0;
        let mut steps = Vec::new();
        loop {
            at += 100 + rng.below(600);
            if at >= total {
                break;
            }
            let user = USERS[usize::try_from(rng.below(3)).unwrap_or(0)].to_owned();
            let action = match rng.below(18) {
                0..=6 => Action::Create {
                    user,
                    workflow: if rng.below(4) == 0 {
                        "gated.sh"
                    } else {
                        "ok.sh"
                    }
                    .to_owned(),
                },
                7..=8 => Action::Cancel {
                    user,
                    nth: usize::try_from(rng.below(8)).unwrap_or(0),
                },
                9..=11 => Action::List { user },
                12 => Action::KillEngine {
                    index: usize::try_from(rng.below(2)).unwrap_or(0),
                },
                13 => Action::PauseEngine {
                    index: usize::try_from(rng.below(2)).unwrap_or(0),
                    ms: 300 + rng.below(1500),
                },
                14 => match (topology, rng.below(2)) {
                    (Topology::Single, 0) => Action::RestartNats,
                    (Topology::Single, _) => Action::FreezeNats {
                        ms: 200 + rng.below(1000),
                    },
                    (Topology::Cluster, 0) => Action::KillNatsServer {
                        index: usize::try_from(rng.below(3)).unwrap_or(0),
                        ms: 300 + rng.below(1500),
                    },
                    (Topology::Cluster, _) => Action::PartitionNatsServer {
                        index: usize::try_from(rng.below(3)).unwrap_or(0),
                        ms: 300 + rng.below(1500),
                    },
                },
                15 => Action::RefuseExports {
                    n: 1 + rng.below(3),
                },
                16 => Action::SlowCollector {
                    ms: 50 + rng.below(400),
                },
                _ => Action::KillApi {
                    ms: 200 + rng.below(1200),
                },
            };
            steps.push(Step { at_ms: at, action });
        }
        Self {
            seed,
            topology,
            steps,
        }
    }

    /// The text form: a header naming the seed, then one step a line.
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "# chaos schedule, seed {}: `e2e chaos --schedule THIS_FILE` replays it\nseed {}\ntopology {}\n",
            self.seed, self.seed, self.topology
        );
        for s in &self.steps {
            let _ = writeln!(out, "+{}ms {}", s.at_ms, s.action);
        }
        out
    }

    /// Reads [`Schedule::to_text`] back (comment lines, such as a reproducer's violation,
    /// are skipped); an error names the line.
    pub fn parse(text: &str) -> Result<Self> {
        let mut seed = None;
        let mut topology = Topology::Single;
        let mut steps = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || format!("schedule line {}: {line:?}", i + 1);
            if let Some(s) = line.strip_prefix("seed ") {
                seed = Some(s.parse().with_context(bad)?);
                continue;
            }
            if let Some(t) = line.strip_prefix("topology ") {
                topology = crate::topology::choose(Some(t)).with_context(bad)?;
                continue;
            }
            let (at, rest) = line.split_once(' ').with_context(bad)?;
            let at_ms = at
                .strip_prefix('+')
                .and_then(|a| a.strip_suffix("ms"))
                .and_then(|a| a.parse().ok())
                .with_context(bad)?;
            let words: Vec<&str> = rest.split_whitespace().collect();
            let ms = |w: &str| -> Result<u64> {
                w.strip_suffix("ms")
                    .and_then(|n| n.parse().ok())
                    .with_context(bad)
            };
            let num = |w: &str| -> Result<usize> { w.parse().ok().with_context(bad) };
            let action = match words.as_slice() {
                ["create", user, workflow] => Action::Create {
                    user: (*user).to_owned(),
                    workflow: (*workflow).to_owned(),
                },
                ["cancel", user, nth] => Action::Cancel {
                    user: (*user).to_owned(),
                    nth: num(nth)?,
                },
                ["list", user] => Action::List {
                    user: (*user).to_owned(),
                },
                ["kill-engine", index] => Action::KillEngine { index: num(index)? },
                ["pause-engine", index, d] => Action::PauseEngine {
                    index: num(index)?,
                    ms: ms(d)?,
                },
                ["restart-nats"] => Action::RestartNats,
                ["freeze-nats", d] => Action::FreezeNats { ms: ms(d)? },
                ["refuse-exports", n] => Action::RefuseExports {
                    n: u64::try_from(num(n)?).unwrap_or(1),
                },
                ["slow-collector", d] => Action::SlowCollector { ms: ms(d)? },
                ["kill-api", d] => Action::KillApi { ms: ms(d)? },
                ["kill-nats-server", index, d] => Action::KillNatsServer {
                    index: num(index)?,
                    ms: ms(d)?,
                },
                ["partition-nats-server", index, d] => Action::PartitionNatsServer {
                    index: num(index)?,
                    ms: ms(d)?,
                },
                _ => bail!("{}: not a step", bad()),
            };
            steps.push(Step { at_ms, action });
        }
        let schedule = Self {
            seed: seed.context("the schedule names no seed (a `seed N` line)")?,
            topology,
            steps,
        };
        if topology == Topology::Single
            && let Some(s) = schedule.steps.iter().find(|s| {
                matches!(
                    s.action,
                    Action::KillNatsServer { .. } | Action::PartitionNatsServer { .. }
                )
            })
        {
            bail!(
                "`{}` needs a cluster: add a `topology cluster` line",
                s.action
            );
        }
        Ok(schedule)
    }

    /// The schedule as a scenario stub: a test function that plays it with the fault verbs.
    #[must_use]
    pub fn scenario_stub(&self) -> String {
        let mut out = format!(
            "/// Found by chaos (seed {}), shrunk to {} step(s). **What it pins.** …\n\
             #[tokio::test(flavor = \"multi_thread\", worker_threads = 2)]\n\
             async fn chaos_seed_{}() -> anyhow::Result<()> {{\n    \
             let schedule = harness::chaos::Schedule::parse(\n        r#\"{}\"#,\n    )?;\n    \
             let outcome = harness::chaos::run(\"chaos_seed_{}\", &schedule, None).await?;\n    \
             anyhow::ensure!(outcome.violations.is_empty(), \"{{:#?}}\", outcome.violations);\n    \
             Ok(())\n}}\n",
            self.seed,
            self.steps.len(),
            self.seed,
            self.to_text().trim_end(),
            self.seed
        );
        out.push('\n');
        out
    }
}

/// What one chaos run found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Each invariant broken, with the run it was broken on and what was seen.
    pub violations: Vec<String>,
    /// How many runs were accepted, by final state.
    pub states: BTreeMap<String, usize>,
    /// Where its artefacts are.
    pub dir: PathBuf,
}

fn body(workflow: &str, gate: &std::path::Path) -> Value {
    let mut body = json!({
        "workflow_type": "SH",
        "workflow_type_version": "1",
        "workflow_url": test_support::workspace_root().join("fixtures/workflows").join(workflow).display().to_string(),
        "workflow_engine": "generic",
        "workflow_engine_version": "1",
    });
    if workflow == "gated.sh" {
        body["workflow_params"] = json!({"gate": gate.display().to_string()});
    }
    body
}

/// `options` with `bug` injected into every engine (`METIS_TEST_BUG`, see `engine::injected`;
/// debug builds of the engine only).
#[must_use]
pub fn with_injected_bug(bug: &str, mut options: StackOptions) -> StackOptions {
    options
        .engine_env
        .push((common::settings::TEST_BUG, bug.to_owned()));
    options
}

/// Each user's accepted runs: (run id, workflow).
pub type Runs = BTreeMap<String, Vec<(String, String)>>;

/// A bug the harness plants in the system's data after the schedule, before the checker runs,
/// to prove the checker and the shrinker find what they are for (tests only): each behaves
/// like a Metis bug that needs the schedule to have done something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planted {
    /// The first `ok.sh` run that completed gets its first output line stored a second time,
    /// as an engine that published a line twice would (needs one completed `ok.sh` run).
    DuplicateLogLine,
}

/// Plays `schedule` against a fresh stack named `name` (options default to two engines on the
/// `E2E_BACKEND` backend), heals, checks the invariants, and writes `schedule.txt` (and
/// `reproducer.txt` on a violation) into the stack's artefact folder.
pub async fn run(
    name: &str,
    schedule: &Schedule,
    options: Option<StackOptions>,
) -> Result<Outcome> {
    run_planted(name, schedule, options, None).await
}

/// [`run`], with `planted` planted before the checker runs.
pub async fn run_planted(
    name: &str,
    schedule: &Schedule,
    options: Option<StackOptions>,
    planted: Option<Planted>,
) -> Result<Outcome> {
    let mut options = options.unwrap_or(StackOptions {
        engines: 2,
        ..StackOptions::default()
    });
    options.nats = Some(schedule.topology);
    let mut stack = Stack::start(name, options).await?;
    std::fs::write(stack.dir.join("schedule.txt"), schedule.to_text())?;
    stack.timeline.note(format!(
        "chaos schedule (seed {}), {} step(s):\n{}",
        schedule.seed,
        schedule.steps.len(),
        schedule.to_text()
    ));
    let result = play_and_check(&mut stack, schedule, planted).await;
    let dir = stack.dir.clone();
    if let Ok(outcome) = &result
        && !outcome.violations.is_empty()
    {
        let mut text = schedule.to_text();
        for v in &outcome.violations {
            for line in v.lines() {
                let _ = writeln!(text, "# {line}");
            }
        }
        std::fs::write(dir.join("reproducer.txt"), text)?;
    }
    drop(stack);
    result.map(|mut o| {
        o.dir = dir;
        o
    })
}

async fn play_and_check(
    stack: &mut Stack,
    schedule: &Schedule,
    planted: Option<Planted>,
) -> Result<Outcome> {
    let start = tokio::time::Instant::now();
    let mut runs: Runs = BTreeMap::new();
    let gate = stack.gate();
    let mut history = History::default();
    let mut paused: Vec<(usize, tokio::time::Instant)> = Vec::new();
    // A NATS fault that lasts (one at a time) and when it ends.
    let mut nats_down: Option<(NatsDown, tokio::time::Instant)> = None;
    // What each killed engine had running below it (local processes), to check none of it
    // outlived the engine.
    let mut below_killed: Vec<(String, Vec<test_support::SeenProcess>)> = Vec::new();
    let servers = stack.infra.nats_servers();
    let mut killed: Vec<usize> = Vec::new();
    let mut spans_lost = false;
    let mut api_down_until: Option<tokio::time::Instant> = None;
    for step in &schedule.steps {
        let when = start + Duration::from_millis(step.at_ms);
        // Faults that last end on time, before the next step.
        for (index, until) in std::mem::take(&mut paused) {
            if until <= when {
                tokio::time::sleep_until(until).await; // pacing the schedule, not synchronisation
                stack.resume_engine(index).await?;
            } else {
                paused.push((index, until));
            }
        }
        if let Some((down, until)) = nats_down.take() {
            if until <= when {
                tokio::time::sleep_until(until).await; // pacing the schedule, not synchronisation
                down.end(stack).await?;
            } else {
                nats_down = Some((down, until));
            }
        }
        // The API comes back once its time is up and no NATS fault lasts. An API started
        // against a frozen NATS exits after its start-up wait — and so, the first cluster
        // exploration found, may one started while a cluster server is cut off (its groups'
        // elections can outlast the 10 s wait): a supervisor would see it exit and try again;
        // the harness starts it when NATS is whole, as that next try would. Starting it earlier
        // would also hold the schedule (the start waits) past the end of the NATS fault.
        if let Some(until) = api_down_until.filter(|u| *u <= when && nats_down.is_none()) {
            tokio::time::sleep_until(until).await; // pacing the schedule, not synchronisation
            stack.restart_api().await?;
            api_down_until = None;
        }
        tokio::time::sleep_until(when).await; // pacing the schedule, not synchronisation
        let client = |user: &str| stack.client.as_user(Some(user));
        // A client gives up after a while (NATS frozen holds every request): the schedule goes
        // on, and a create it gave up on is checked as a stored run.
        let patience = Duration::from_secs(3);
        match &step.action {
            Action::Create { user, workflow } => {
                let (who, request) = (client(user), body(workflow, &gate));
                let told = match tokio::time::timeout(patience, who.post("/runs", &request))
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {patience:?}")))
                {
                    Ok(r) if r.status == 200 => {
                        let id = r.body["run_id"].as_str().unwrap_or_default().to_owned();
                        runs.entry(user.clone())
                            .or_default()
                            .push((id.clone(), workflow.clone()));
                        Told::Accepted(id)
                    }
                    Ok(r) => Told::Refused(r.status, r.body.to_string()),
                    Err(e) => Told::Failed(format!("{e:#}")),
                };
                history.told.push(told);
            }
            Action::Cancel { user, nth } => {
                if let Some(mine) = runs.get(user).filter(|m| !m.is_empty()) {
                    let (id, _) = &mine[nth % mine.len()];
                    let (who, path) = (client(user), format!("/runs/{id}/cancel"));
                    let _ = tokio::time::timeout(patience, who.post(&path, &json!({}))).await;
                }
            }
            Action::List { user } => {
                let who = client(user);
                let _ = tokio::time::timeout(patience, who.get("/runs")).await;
            }
            Action::KillEngine { index } => {
                let index = index % stack.engines.len().max(1);
                if let Some(engine) = stack.engines.get(index)
                    && !killed.contains(&index)
                    && !paused.iter().any(|(i, _)| *i == index)
                {
                    let below = engine
                        .proc
                        .pid()
                        .map(test_support::descendants)
                        .unwrap_or_default();
                    stack.kill_engine(index).await?;
                    below_killed.push((
                        format!("engine #{} (killed at +{}ms)", index + 1, step.at_ms),
                        below,
                    ));
                    killed.push(index);
                }
            }
            Action::PauseEngine { index, ms } => {
                let index = index % stack.engines.len().max(1);
                if !killed.contains(&index) && !paused.iter().any(|(i, _)| *i == index) {
                    stack.pause_engine(index).await?;
                    paused.push((index, when + Duration::from_millis(*ms)));
                }
            }
            Action::RestartNats => {
                if nats_down.is_none() {
                    stack.restart_nats(true).await?;
                }
            }
            Action::FreezeNats { ms } => {
                if nats_down.is_none() {
                    stack.freeze_nats().await?;
                    nats_down = Some((NatsDown::Frozen, when + Duration::from_millis(*ms)));
                }
            }
            Action::KillNatsServer { index, ms } => {
                if nats_down.is_none() && !servers.is_empty() {
                    let name = servers[index % servers.len()].clone();
                    stack.kill_nats_server(&name).await?;
                    nats_down = Some((NatsDown::Killed(name), when + Duration::from_millis(*ms)));
                }
            }
            Action::PartitionNatsServer { index, ms } => {
                if nats_down.is_none() && !servers.is_empty() {
                    let name = servers[index % servers.len()].clone();
                    stack.partition_nats_server(&name).await?;
                    nats_down = Some((
                        NatsDown::Partitioned(name),
                        when + Duration::from_millis(*ms),
                    ));
                }
            }
            Action::RefuseExports { n } => {
                stack
                    .refuse_exports(*n, crate::otlp::fault::Refusal::Unavailable)
                    .await?;
                spans_lost = true;
            }
            Action::SlowCollector { ms } => stack.slow_exports(*ms).await?,
            Action::KillApi { ms } => {
                if api_down_until.is_none() {
                    stack.kill_api().await?;
                    api_down_until = Some(when + Duration::from_millis(*ms));
                    // Its unexported spans are gone: a trace may lack the API's part.
                    spans_lost = true;
                }
            }
        }
    }

    // Heal: every lasting fault ends, every killed engine is replaced.
    let heal = stack
        .timeline
        .step("healing: resume, thaw, replace killed engines");
    for (index, until) in paused {
        tokio::time::sleep_until(until).await; // pacing the schedule, not synchronisation
        stack.resume_engine(index).await?;
    }
    if let Some((down, until)) = nats_down {
        tokio::time::sleep_until(until).await; // pacing the schedule, not synchronisation
        down.end(stack).await?;
    }
    if let Some(until) = api_down_until {
        tokio::time::sleep_until(until).await; // pacing the schedule, not synchronisation
        stack.restart_api().await?;
    }
    for index in killed {
        stack.replace_engine(index).await?;
    }
    heal.done();
    // 5. Nothing a killed engine ran outlives it: checked before the gate opens, while the
    // long runs would still be waiting on it.
    let mut survivors = Vec::new();
    for (engine, below) in &below_killed {
        let left = test_support::wait_for(
            &format!("the processes below {engine} to be gone"),
            Duration::from_secs(5),
            || async {
                let alive: Vec<String> = below
                    .iter()
                    .filter(|p| p.alive())
                    .map(|p| {
                        // The workflow's own argv is what names it: what follows the last
                        // `--` of the sandbox's command line.
                        let own = p.cmd.rsplit(" -- ").next().unwrap_or(&p.cmd);
                        let wrapped = if own.len() < p.cmd.len() {
                            "(sandboxed) "
                        } else {
                            ""
                        };
                        format!("{} {wrapped}{own}", p.pid)
                    })
                    .collect();
                if alive.is_empty() {
                    Ok(())
                } else {
                    Err(alive.join("; "))
                }
            },
        )
        .await;
        if let Err(e) = left {
            survivors.push(format!("processes of {engine} outlived it: {e:#}"));
        }
    }
    // The long runs may end now.
    std::fs::write(&gate, "open")?;
    if spans_lost {
        stack.expect_export_outage();
    }
    if let Some(bug) = planted {
        plant(stack, &runs, bug).await?;
    }
    let mut outcome = check(stack, &history, &runs, spans_lost).await?;
    outcome.violations.splice(0..0, survivors);
    Ok(outcome)
}

/// A NATS fault that lasts until its time is up.
enum NatsDown {
    /// The one server frozen.
    Frozen,
    /// A cluster server killed.
    Killed(String),
    /// A cluster server cut off.
    Partitioned(String),
}

impl NatsDown {
    async fn end(self, stack: &mut Stack) -> Result<()> {
        match self {
            Self::Frozen => stack.thaw_nats().await,
            Self::Killed(name) => stack.restart_nats_server(&name).await,
            Self::Partitioned(name) => stack.heal_nats_server(&name).await,
        }
    }
}

/// Plants `bug` (see [`Planted`]); does nothing when the schedule gave it nothing to act on.
async fn plant(stack: &Stack, runs: &Runs, bug: Planted) -> Result<()> {
    match bug {
        Planted::DuplicateLogLine => {
            for (user, ids) in runs {
                let client = stack.client.as_user(Some(user));
                for (id, workflow) in ids {
                    if workflow != "ok.sh" {
                        continue;
                    }
                    let done = test_support::wait_for(
                        &format!("run {id} to end"),
                        Duration::from_secs(30),
                        || async {
                            match client.state(id).await {
                                Ok(s) if crate::fault::TERMINAL.contains(&s.as_str()) => Ok(s),
                                Ok(s) => Err(s),
                                Err(e) => Err(e.to_string()),
                            }
                        },
                    )
                    .await?;
                    if done != "COMPLETE" {
                        continue;
                    }
                    let run: common::RunId = id.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
                    let line = common::LogLine {
                        seq: 0,
                        stream: common::LogStream::Stdout,
                        line: "ok: starting".to_owned(),
                        continues: false,
                        time: chrono::Utc::now(),
                    };
                    let nats = stack.infra.nats_endpoint.connect().await?;
                    let js = async_nats::jetstream::new(nats);
                    js.publish(
                        common::nats::logs_subject(&run, common::LogStream::Stdout),
                        serde_json::to_vec(&line)?.into(),
                    )
                    .await?
                    .await?;
                    stack
                        .timeline
                        .note(format!("planted: a duplicate output line in run {id}"));
                    return Ok(());
                }
            }
            Ok(())
        }
    }
}

/// The invariants of the module docs, over what the services answer and exported.
pub async fn check(
    stack: &mut Stack,
    history: &History,
    runs: &Runs,
    spans_lost: bool,
) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    // 4. The service answers again.
    test_support::wait_for(
        "metis-api to answer /readyz after healing",
        Duration::from_secs(30),
        || async {
            match stack.client.get("/readyz").await {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("{} {}", r.status, r.body)),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    // 1. Every accepted run, and every run stored for a user (also one whose client gave up
    // waiting for the answer), is terminal. `runs` holds every 200 of the history, by user.
    debug_assert_eq!(
        history.accepted().len(),
        runs.values().map(Vec::len).sum::<usize>()
    );
    let mut states: BTreeMap<String, String> = BTreeMap::new();
    for user in USERS {
        let client = stack.client.as_user(Some(user));
        let mut ids: Vec<String> = crate::fault::list_all_runs(&client).await?;
        for (id, _) in runs.get(user).into_iter().flatten() {
            if !ids.contains(id) {
                outcome.violations.push(format!(
                    "run {id} of {user} was accepted (200) but is not stored: GET /runs does not list it"
                ));
                ids.push(id.clone());
            }
        }
        for id in &ids {
            let state = test_support::wait_for(
                &format!("run {id} of {user} to reach a terminal state"),
                Duration::from_secs(60),
                || async {
                    match client.state(id).await {
                        Ok(s) if crate::fault::TERMINAL.contains(&s.as_str()) => Ok(s),
                        Ok(s) => Err(s),
                        Err(e) => Err(e.to_string()),
                    }
                },
            )
            .await;
            match state {
                Ok(s) => {
                    states.insert(id.clone(), s);
                }
                Err(e) => outcome
                    .violations
                    .push(format!("run {id} of {user} never finished: {e:#}")),
            }
        }
    }
    for s in states.values() {
        *outcome.states.entry(s.clone()).or_default() += 1;
    }
    // 5. Once every run is over, no process of any is left (the long runs' command lines
    // name this stack's gate).
    if outcome.violations.is_empty() {
        let gate = stack.gate().display().to_string();
        let left = test_support::wait_for(
            "every workflow process of this stack to be gone",
            Duration::from_secs(10),
            || async {
                let left = test_support::processes_marked(&gate);
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(left.join("; "))
                }
            },
        )
        .await;
        if let Err(e) = left {
            outcome.violations.push(format!(
                "every run is over, but processes of runs are left: {e:#}"
            ));
        }
    }
    // 2. A COMPLETE run printed each of its lines once.
    for (user, ids) in runs {
        let client = stack.client.as_user(Some(user));
        for (id, workflow) in ids {
            if states.get(id).is_none_or(|s| s != "COMPLETE") {
                continue;
            }
            let Some((_, expected)) = LINES.iter().find(|(w, _)| w == workflow) else {
                continue;
            };
            let lines = client.log_lines(id).await?;
            let mut seen: Vec<&str> = lines.iter().map(String::as_str).collect();
            let mut want: Vec<&str> = expected.to_vec();
            seen.sort_unstable();
            want.sort_unstable();
            if seen != want {
                outcome.violations.push(format!(
                    "run {id} of {user} ({workflow}) is COMPLETE, but its output lines are \
                     {lines:?}, not each of {expected:?} once"
                ));
            }
        }
    }
    // 2 and 3, from the spans: one COMPLETE workflow_run per COMPLETE run, and no orphan in
    // its trace unless the collector was made to refuse exports.
    let data = stack.collect_spans(1).await?;
    for (id, state) in &states {
        if state != "COMPLETE" {
            continue;
        }
        let own = crate::tree::only_traces_with(&data, "run_id", &[id.as_str()]);
        let options = crate::tree_options();
        let forest = match crate::tree::SpanForest::from_otlp(&own, &options) {
            Ok(f) => f,
            Err(e) if spans_lost && e.is_incomplete() => continue,
            Err(e) => {
                let drawn =
                    crate::tree::SpanForest::from_otlp(&own, &options.clone().draw_orphans())
                        .map(|f| f.render())
                        .unwrap_or_default();
                outcome.violations.push(format!(
                    "the traces of COMPLETE run {id} are not whole: {e}\n{drawn}"
                ));
                continue;
            }
        };
        let complete = forest
            .spans_named("workflow_run")
            .filter(|s| s.attr("state").and_then(crate::tree::Value::as_str) == Some("COMPLETE"))
            .count();
        if complete != 1 && !spans_lost {
            outcome.violations.push(format!(
                "run {id} is COMPLETE with {complete} COMPLETE workflow_run span(s), not one:\n{}",
                forest.render()
            ));
        }
    }
    Ok(outcome)
}

/// Removes steps from `schedule` while its violation still reproduces, and returns the
/// smallest schedule found. Chunks first, then single steps (a simple delta debugging): half
/// the steps at a time, then a quarter, … then one, each chunk from the last to the first; a
/// removal is kept when the smaller schedule still breaks an invariant. At most `budget`
/// tries. Fails when the schedule does not violate an invariant to begin with.
pub async fn shrink(
    name: &str,
    schedule: &Schedule,
    options: impl Fn() -> Option<StackOptions>,
    budget: usize,
) -> Result<Schedule> {
    shrink_planted(name, schedule, options, budget, None).await
}

/// [`shrink`], with `planted` planted in every run (tests of the shrinker).
pub async fn shrink_planted(
    name: &str,
    schedule: &Schedule,
    options: impl Fn() -> Option<StackOptions>,
    budget: usize,
    planted: Option<Planted>,
) -> Result<Schedule> {
    let first = run_planted(name, schedule, options(), planted).await?;
    if first.violations.is_empty() {
        bail!(
            "the schedule of seed {} violates no invariant here; nothing to shrink",
            schedule.seed
        );
    }
    let mut best = schedule.clone();
    let mut tries = 0;
    let mut chunk = best.steps.len().div_ceil(2).max(1);
    loop {
        let mut end = best.steps.len();
        while end > 0 && tries < budget {
            let start = end.saturating_sub(chunk);
            let mut candidate = best.clone();
            candidate.steps.drain(start..end);
            tries += 1;
            let outcome = run_planted(name, &candidate, options(), planted).await?;
            if !outcome.violations.is_empty() {
                best = candidate;
            }
            end = start;
        }
        if chunk == 1 || tries >= budget {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_schedule_and_its_text_reads_back() {
        let a = Schedule::generate(7, Duration::from_secs(20));
        let b = Schedule::generate(7, Duration::from_secs(20));
        assert_eq!(a, b, "same seed, same schedule");
        assert_ne!(a, Schedule::generate(8, Duration::from_secs(20)));
        assert!(a.steps.len() > 10, "{}", a.to_text());
        assert!(
            a.steps.iter().any(|s| s.action.is_fault()),
            "{}",
            a.to_text()
        );
        assert!(a.steps.windows(2).all(|w| w[0].at_ms < w[1].at_ms));
        assert_eq!(Schedule::parse(&a.to_text()).unwrap(), a);
        // A reproducer's comments are skipped.
        let with_violation = format!("{}# run x never finished\n", a.to_text());
        assert_eq!(Schedule::parse(&with_violation).unwrap(), a);
    }

    #[test]
    fn a_bad_line_is_named() {
        let err = Schedule::parse("seed 1\n+10ms explode everything\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = Schedule::parse("+10ms list bob\n").unwrap_err();
        assert!(err.to_string().contains("seed"), "{err}");
    }

    #[test]
    fn the_stub_replays_the_schedule() {
        let s = Schedule::parse("seed 3\n+100ms create bob ok.sh\n+200ms kill-engine 0\n").unwrap();
        let stub = s.scenario_stub();
        assert!(stub.contains("async fn chaos_seed_3()"), "{stub}");
        assert!(stub.contains("+200ms kill-engine 0"), "{stub}");
        assert!(stub.contains("harness::chaos::run("), "{stub}");
    }
}
