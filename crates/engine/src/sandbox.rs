//! The per-run sandbox: every workflow runs inside Linux namespaces of its own, as an
//! unprivileged identity of its own, with kernel limits, built by **bubblewrap** (`bwrap`, the
//! sandbox Flatpak uses) — never a hand-written imitation of it.
//!
//! What a run gets ([`command_line`] builds the argv, the unit tests pin it):
//!
//! | what | how | why |
//! | --- | --- | --- |
//! | a PID namespace | `--unshare-pid`, bwrap's own init as pid 1 | when the run's main process exits, the init exits and the kernel kills every process left in the namespace, however it detached (`setsid`, double fork, `nohup`) |
//! | dies with the engine | `--die-with-parent` on bwrap and its init, and the [`crate::keeper`] killing bwrap's group | an engine that is SIGKILLed takes every run with it; nothing here is visible to (or killable by) a workflow |
//! | a mount namespace | a fresh root with [`SandboxConfig::read_only_paths`] and the allowed workflow roots read-only, its own workdir read-write, a private `/tmp`, a `/proc` of its own PID namespace, a minimal `/dev` | a workflow cannot see another run's workdir, the engine's files, or any process but its own |
//! | its own identity | engine as root: bwrap, then `setpriv` to a uid of [`SandboxConfig::uid_first`]… unique among this engine's runs, no capabilities, `no_new_privs`; engine as another user: a user namespace (`--unshare-user`) | a workflow cannot signal the engine or another run, nor read their files (`0700` workdirs owned by the run's uid) |
//! | limits | `prlimit --nproc` ([`SandboxConfig::pids_max`]) and `--as` ([`SandboxConfig::memory_max_bytes`]) | a fork bomb or a runaway allocation stops at the run |
//! | IPC, UTS, cgroup namespaces | `--unshare-ipc --unshare-uts --unshare-cgroup-try` | no shared memory or semaphores across runs |
//! | a new session | `--new-session` | no terminal injection (`TIOCSTI`) |
//!
//! The network is shared unless [`SandboxConfig::network`] is `false` (workflows fetch data).
//!
//! The engine **fails closed**: [`Sandbox::open`] runs a probe sandbox at start-up, and when the
//! machine cannot provide one (bwrap missing, user namespaces disabled) the engine refuses to
//! start with an error naming what is missing. [`UNSAFE_OPT_OUT`] (`METIS_UNSAFE_NO_SANDBOX=1`)
//! runs workflows as plain child processes instead, for development only: the engine warns at
//! start-up and on every run, and `/service-info` shows `sandbox: none` for the instance.
//!
//! Signals: the engine's child is bwrap, the leader of the run's process group. A cancel's
//! SIGTERM goes to every process *inside* the run's PID namespace ([`signal_run`]), so a
//! workflow gets its grace period; SIGKILL goes to bwrap's group, whose death takes the init
//! and with it the whole namespace. bwrap reports a workflow killed by signal N as exit status
//! 128+N ([`Sandbox::exit`] reads it back as the signal, as shells do).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::SandboxConfig;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::EngineError;
use crate::outcome::Exit;

/// The engine setting that runs workflows without a sandbox (development only).
pub const UNSAFE_OPT_OUT: &str = "METIS_UNSAFE_NO_SANDBOX";

/// What [`UNSAFE_OPT_OUT`] logs at start-up and on every run.
pub const UNSAFE_WARNING: &str = "METIS_UNSAFE_NO_SANDBOX is set: workflows run unsandboxed as the engine's own user and can read its files, signal its processes and outlive their runs (development only)";

/// How long the start-up probe may take.
const PROBE_DEADLINE: Duration = Duration::from_secs(10);

/// The sandbox kind, as `/service-info` and the `workflow_run` span's `sandbox` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// bubblewrap namespaces, a per-run identity, limits.
    Bubblewrap,
    /// [`UNSAFE_OPT_OUT`]: none.
    None,
}

impl Kind {
    /// `bubblewrap` or `none`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Bubblewrap => "bubblewrap",
            Self::None => "none",
        }
    }
}

/// The programs a sandbox is built from (absolute paths, found on `PATH`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    /// `bwrap`.
    pub bwrap: PathBuf,
    /// `prlimit` (util-linux).
    pub prlimit: PathBuf,
    /// `setpriv` (util-linux); `Some` when the engine runs as root and drops each run to a uid
    /// of its own, `None` for a user namespace.
    pub setpriv: Option<PathBuf>,
}

/// What a host path is, as [`command_line`] needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPath {
    /// Absent: not mounted.
    Missing,
    /// A symlink (recreated inside, e.g. `/bin` → `usr/bin` on a merged-`/usr` system).
    Symlink(PathBuf),
    /// A file or directory: bind-mounted.
    Present,
}

/// Looks `path` up on the host.
#[must_use]
pub fn host_path(path: &Path) -> HostPath {
    match std::fs::symlink_metadata(path) {
        Err(_) => HostPath::Missing,
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::read_link(path).map_or(HostPath::Missing, HostPath::Symlink)
        }
        Ok(_) => HostPath::Present,
    }
}

/// The full argv that runs `argv` in a sandbox: bwrap's options, then (as root) `setpriv`
/// down to `uid`, then `prlimit`, then the workflow's own argv. `lookup` says what each
/// host path is (the unit tests pass a fake file system).
#[must_use]
pub fn command_line(
    tools: &Tools,
    cfg: &SandboxConfig,
    roots: &[PathBuf],
    workdir: &Path,
    uid: u32,
    argv: &[String],
    lookup: &dyn Fn(&Path) -> HostPath,
) -> Vec<String> {
    fn push(a: &mut Vec<String>, items: &[&str]) {
        a.extend(items.iter().map(|s| (*s).to_owned()));
    }
    let mut a: Vec<String> = Vec::new();
    push(
        &mut a,
        &[
            "--die-with-parent",
            "--new-session",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
        ],
    );
    if !cfg.network {
        push(&mut a, &["--unshare-net"]);
    }
    let uid_text = uid.to_string();
    if tools.setpriv.is_none() {
        push(
            &mut a,
            &[
                "--unshare-user",
                "--uid",
                &uid_text,
                "--gid",
                &uid_text,
                "--disable-userns",
            ],
        );
    }
    let text = |p: &Path| p.to_string_lossy().into_owned();
    // First the private file systems, so a bind below `/tmp` is not hidden by its tmpfs.
    // A private /tmp and /dev/shm everyone in the sandbox may write (sticky, like the host's),
    // each of bounded size (memory-backed).
    let tmp_size = cfg.tmp_max_bytes.to_string();
    push(
        &mut a,
        &[
            "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", &tmp_size, "--tmpfs",
            "/tmp", "--perms", "1777", "--size", &tmp_size, "--tmpfs", "/dev/shm",
        ],
    );
    // What is already there inside: read-only binds (their subpaths need no --dir).
    let mut mounted: Vec<PathBuf> = Vec::new();
    let mut made: BTreeSet<PathBuf> = BTreeSet::new();
    // Parents of a bind target are created world-traversable (0755), so the run's uid can
    // reach its own workdir and the read-only paths by their host paths; only those inside a
    // read-only bind exist already (and could not be created).
    let mut parents = |target: &Path, a: &mut Vec<String>, mounted: &[PathBuf]| {
        let ancestors: Vec<&Path> = target.ancestors().skip(1).collect();
        for dir in ancestors.into_iter().rev() {
            if dir == Path::new("/") || mounted.iter().any(|m| dir.starts_with(m)) {
                continue;
            }
            if made.insert(dir.to_path_buf()) {
                a.extend([
                    "--perms".to_owned(),
                    "0755".to_owned(),
                    "--dir".to_owned(),
                    text(dir),
                ]);
            }
        }
    };
    for p in cfg.read_only_paths.iter().chain(roots) {
        if mounted.iter().any(|m| p.starts_with(m)) {
            continue;
        }
        match lookup(p) {
            HostPath::Missing => {}
            HostPath::Symlink(target) => {
                parents(p, &mut a, &mounted);
                a.extend(["--symlink".to_owned(), text(&target), text(p)]);
            }
            HostPath::Present => {
                parents(p, &mut a, &mounted);
                a.extend(["--ro-bind".to_owned(), text(p), text(p)]);
                mounted.push(p.clone());
            }
        }
    }
    parents(workdir, &mut a, &mounted);
    a.extend([
        "--bind".to_owned(),
        text(workdir),
        text(workdir),
        "--chdir".to_owned(),
        text(workdir),
    ]);
    if tools.setpriv.is_some() {
        // As real root bwrap would keep every capability it has. Only what is needed until
        // setpriv has dropped to the run's uid is left: entering the run's 0700 workdir
        // (DAC_READ_SEARCH), changing uid and gid, emptying the bounding set (SETPCAP); setpriv
        // drops those too, and the probe checks that nothing is left.
        push(
            &mut a,
            &[
                "--cap-drop",
                "ALL",
                "--cap-add",
                "CAP_DAC_READ_SEARCH",
                "--cap-add",
                "CAP_SETUID",
                "--cap-add",
                "CAP_SETGID",
                "--cap-add",
                "CAP_SETPCAP",
            ],
        );
    }
    let mut out = vec![text(&tools.bwrap)];
    out.append(&mut a);
    out.push("--".to_owned());
    if let Some(setpriv) = &tools.setpriv {
        out.extend([
            text(setpriv),
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".to_owned(),
            "--inh-caps=-all".to_owned(),
            "--bounding-set=-all".to_owned(),
            "--no-new-privs".to_owned(),
            "--".to_owned(),
        ]);
    }
    let mut limits = Vec::new();
    if cfg.pids_max > 0 {
        limits.push(format!("--nproc={}", cfg.pids_max));
    }
    if cfg.memory_max_bytes > 0 {
        limits.push(format!("--as={}", cfg.memory_max_bytes));
    }
    if !limits.is_empty() {
        out.push(text(&tools.prlimit));
        out.extend(limits);
        out.push("--".to_owned());
    }
    out.extend(argv.iter().cloned());
    out
}

/// The sandbox of an engine instance: its tools and settings, and the uids its runs hold.
#[derive(Debug)]
pub struct Sandbox {
    tools: Option<Tools>,
    cfg: SandboxConfig,
    roots: Vec<PathBuf>,
    in_use: Arc<Mutex<BTreeSet<u32>>>,
}

/// A uid held by one run until it is dropped.
#[derive(Debug)]
pub struct Identity {
    uid: u32,
    in_use: Option<Arc<Mutex<BTreeSet<u32>>>>,
}

impl Identity {
    /// The run's uid (on the host when the engine is root, inside its user namespace otherwise).
    #[must_use]
    pub const fn uid(&self) -> u32 {
        self.uid
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        if let Some(set) = &self.in_use {
            set.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&self.uid);
        }
    }
}

/// `name` on `PATH`, as an absolute path.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn unavailable(why: impl std::fmt::Display) -> EngineError {
    EngineError::Sandbox(format!(
        "{why}; workflows must not run unsandboxed. Install bubblewrap and util-linux (Debian: apt-get install bubblewrap util-linux; `scripts/setup` does it), or set {UNSAFE_OPT_OUT}=1 to run workflows without a sandbox (development only)"
    ))
}

impl Sandbox {
    /// The sandbox for `config`, checked by running a probe in it; `unsafe_opt_out` is
    /// [`UNSAFE_OPT_OUT`]. Fails, naming what is missing, when the machine cannot sandbox.
    pub async fn open(
        config: &common::FullEngineConfig,
        unsafe_opt_out: bool,
        secrets: &[(&'static str, PathBuf)],
    ) -> Result<Self, EngineError> {
        let roots = config
            .engine
            .allowed_workflow_roots
            .iter()
            .map(PathBuf::from)
            .collect();
        let cfg = config.runs.sandbox.clone();
        if unsafe_opt_out {
            tracing::warn!("{UNSAFE_WARNING}");
            return Ok(Self {
                tools: None,
                cfg,
                roots,
                in_use: Arc::default(),
            });
        }
        let find = |name: &str, package: &str| {
            which(name).ok_or_else(|| {
                unavailable(format!(
                    "'{name}' (Debian package {package}) was not found on PATH"
                ))
            })
        };
        let root = nix::unistd::geteuid().is_root();
        let tools = Tools {
            bwrap: find("bwrap", "bubblewrap")?,
            prlimit: find("prlimit", "util-linux")?,
            setpriv: if root {
                Some(find("setpriv", "util-linux")?)
            } else {
                None
            },
        };
        let sandbox = Self {
            tools: Some(tools),
            cfg,
            roots,
            in_use: Arc::default(),
        };
        sandbox.check_exposure(&config.runs.workdir.base, secrets)?;
        sandbox.probe(&config.runs.workdir.base).await?;
        Ok(sandbox)
    }

    /// Refuses a layout in which a workflow would see what is not its own: the workdir base
    /// (every run's workdir) or a secret file under a path bound into every sandbox, readable
    /// by the run's identity (as root: a world-readable file; in a user namespace, where the
    /// host sees the engine's uid: any).
    fn check_exposure(
        &self,
        base: &Path,
        secrets: &[(&'static str, PathBuf)],
    ) -> Result<(), EngineError> {
        let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let bound: Vec<PathBuf> = self
            .cfg
            .read_only_paths
            .iter()
            .chain(&self.roots)
            .map(|p| real(p))
            .collect();
        let under = |p: &Path| bound.iter().find(|b| p.starts_with(b)).cloned();
        let base = real(base);
        if let Some(b) = under(&base) {
            return Err(EngineError::Sandbox(format!(
                "the workdir base {} lies under {}, which every workflow sees: move runs.workdir.base out of runs.sandbox.readOnlyPaths and engine.allowedWorkflowRoots",
                base.display(),
                b.display()
            )));
        }
        let as_root = self.tools.as_ref().is_some_and(|t| t.setpriv.is_some());
        for (var, file) in secrets {
            let file = real(file);
            let Some(b) = under(&file) else { continue };
            let world_readable = {
                use std::os::unix::fs::PermissionsExt;
                std::fs::metadata(&file).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
            };
            if !as_root || world_readable {
                return Err(EngineError::Sandbox(format!(
                    "{var} {} lies under {}, which every workflow sees, and a workflow could read it{}: keep it outside runs.sandbox.readOnlyPaths and engine.allowedWorkflowRoots",
                    file.display(),
                    b.display(),
                    if as_root {
                        " (it is world-readable)"
                    } else {
                        " (workflows run as the engine's uid)"
                    }
                )));
            }
        }
        Ok(())
    }

    /// Runs a probe in a sandbox of a scratch workdir under `base`: it must run as the uid it
    /// was given, with no capability left (effective, permitted or bounding).
    async fn probe(&self, base: &Path) -> Result<(), EngineError> {
        let dir = base.join(format!(".sandbox-probe-{}", std::process::id()));
        crate::workdir::create(base, &dir).await?;
        let identity = self.identity("probe");
        let result = async {
            self.prepare(&identity, &dir).await?;
            let check = r#"test "$(id -u)" = "$1" || { echo "runs as uid $(id -u), not $1" >&2; exit 1; }
if grep -Eq '^Cap(Eff|Prm|Bnd):[[:space:]]*0*[1-9a-f]' /proc/self/status; then
  grep '^Cap' /proc/self/status >&2; echo 'capabilities are left' >&2; exit 1
fi"#;
            let argv = self.wrap(
                &identity,
                &dir,
                &[
                    "/bin/sh".to_owned(),
                    "-c".to_owned(),
                    check.to_owned(),
                    "sh".to_owned(),
                    identity.uid().to_string(),
                ],
            );
            let child = tokio::process::Command::new(&argv[0])
                .args(&argv[1..])
                .env_clear()
                .env("PATH", crate::process::DEFAULT_PATH)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| unavailable(format!("starting {} failed: {e}", argv[0])))?;
            let out = tokio::time::timeout(PROBE_DEADLINE, child.wait_with_output())
                .await
                .map_err(|_| unavailable("the probe sandbox did not finish within 10 s"))?
                .map_err(|e| unavailable(format!("waiting for the probe sandbox failed: {e}")))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(unavailable(format!(
                    "the probe sandbox failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )))
            }
        }
        .await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        result
    }

    /// `bubblewrap`, or `none` under [`UNSAFE_OPT_OUT`].
    #[must_use]
    pub const fn kind(&self) -> Kind {
        if self.tools.is_some() {
            Kind::Bubblewrap
        } else {
            Kind::None
        }
    }

    /// The limits applied to each run (for the `workflow_run` span): `(pids_max,
    /// memory_max_bytes)`, 0 where none.
    #[must_use]
    pub const fn limits(&self) -> (u64, u64) {
        if self.tools.is_some() {
            (self.cfg.pids_max, self.cfg.memory_max_bytes)
        } else {
            (0, 0)
        }
    }

    /// Whether a run that ended in `state` keeps its workdir.
    #[must_use]
    pub fn keeps_workdir(&self, state: common::State) -> bool {
        self.cfg.keep_workdir_on_failure && state != common::State::Complete
    }

    /// A uid for the run `key`: not held by another run of this engine, and (as root) owning
    /// no process on the host.
    #[must_use]
    pub fn identity(&self, key: &str) -> Identity {
        if self.tools.is_none() {
            return Identity {
                uid: nix::unistd::geteuid().as_raw(),
                in_use: None,
            };
        }
        let busy = if nix::unistd::geteuid().is_root() {
            uids_with_processes()
        } else {
            BTreeSet::new()
        };
        let (first, count) = (self.cfg.uid_first, self.cfg.uid_count.max(1));
        let start = fnv1a(key) % count;
        let mut set = self
            .in_use
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pick = (0..count)
            .map(|i| first + (start + i) % count)
            .find(|u| !set.contains(u) && !busy.contains(u))
            // Every uid busy (cannot happen with uidCount >= maxConcurrentRuns and a host that
            // is not already running that many processes in the range): share the first free
            // of this engine's own.
            .or_else(|| {
                (0..count)
                    .map(|i| first + (start + i) % count)
                    .find(|u| !set.contains(u))
            })
            .unwrap_or(first);
        set.insert(pick);
        Identity {
            uid: pick,
            in_use: Some(self.in_use.clone()),
        }
    }

    /// Hands the run's workdir and its `tmp` (both made by the engine just before) to its uid,
    /// so nobody else reads them. Nothing below is followed: a link a workflow left there
    /// cannot turn the engine's `chown` onto a host file.
    pub async fn prepare(&self, identity: &Identity, workdir: &Path) -> Result<(), EngineError> {
        let Some(tools) = &self.tools else {
            return Ok(());
        };
        if tools.setpriv.is_none() {
            return Ok(());
        }
        let uid = identity.uid;
        let dir = workdir.to_path_buf();
        tokio::task::spawn_blocking(move || {
            std::os::unix::fs::lchown(&dir, Some(uid), Some(uid))?;
            match std::os::unix::fs::lchown(dir.join("tmp"), Some(uid), Some(uid)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(|source| EngineError::Workdir {
            path: workdir.to_owned(),
            source,
        })
    }

    /// The argv that runs `argv` for the run holding `identity` in `workdir`.
    #[must_use]
    pub fn wrap(&self, identity: &Identity, workdir: &Path, argv: &[String]) -> Vec<String> {
        match &self.tools {
            None => argv.to_vec(),
            Some(tools) => command_line(
                tools,
                &self.cfg,
                &self.roots,
                workdir,
                identity.uid,
                argv,
                &host_path,
            ),
        }
    }

    /// How the workflow ended, from the exit status of what the engine started.
    #[must_use]
    pub fn exit(&self, status: std::process::ExitStatus) -> Exit {
        let exit = Exit::from(status);
        match (self.tools.is_some(), exit.code) {
            // bwrap exits 128+N for a workflow killed by signal N.
            (true, Some(code)) if (129..=128 + 64).contains(&code) => Exit {
                code: None,
                signal: Some(code - 128),
            },
            _ => exit,
        }
    }
}

/// FNV-1a of `s` (a stable spread of run ids over the uid range).
fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The uids that own a process on this host now.
fn uids_with_processes() -> BTreeSet<u32> {
    use std::os::unix::fs::MetadataExt;
    procs()
        .filter_map(|pid| std::fs::metadata(format!("/proc/{pid}")).ok())
        .map(|m| m.uid())
        .collect()
}

/// Every process id on the host.
fn procs() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
}

/// The PID namespace of `pid` (`pid:[4026531836]`), when readable.
#[must_use]
pub fn pid_namespace(pid: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The parent of `pid`, from `/proc/<pid>/stat`.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The processes of the sandbox whose bwrap is `leader`, except its init; `None` when
/// `leader` runs no sandbox (yet).
fn sandbox_members(leader: i32) -> Option<Vec<i32>> {
    let own = pid_namespace(leader)?;
    let all: Vec<i32> = procs().collect();
    let init = all
        .iter()
        .copied()
        .find(|&p| parent_of(p) == Some(leader) && pid_namespace(p).is_some_and(|ns| ns != own))?;
    let ns = pid_namespace(init)?;
    Some(
        all.into_iter()
            .filter(|&p| p != init && pid_namespace(p).as_deref() == Some(ns.as_str()))
            .collect(),
    )
}

/// Sends `signal` to the run whose process-group leader is `leader`: to every process inside
/// its sandbox (not to bwrap, whose death would end the sandbox at once), or to its process
/// group when it runs unsandboxed or its sandbox is not up yet.
pub fn signal_run(leader: i32, signal: Signal) {
    match sandbox_members(leader) {
        Some(members) => {
            for pid in members {
                match kill(Pid::from_raw(pid), signal) {
                    Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                    Err(e) => {
                        tracing::warn!(pid, signal = %signal, error = %e, "signalling a sandboxed process failed")
                    }
                }
            }
        }
        None => crate::process::signal_group(leader, signal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(root: bool) -> Tools {
        Tools {
            bwrap: "/usr/bin/bwrap".into(),
            prlimit: "/usr/bin/prlimit".into(),
            setpriv: root.then(|| "/usr/bin/setpriv".into()),
        }
    }

    fn fake(path: &Path) -> HostPath {
        match path.to_str() {
            Some("/bin" | "/lib") => HostPath::Symlink(format!("usr{}", path.display()).into()),
            Some("/usr" | "/etc" | "/srv/workflows") => HostPath::Present,
            _ => HostPath::Missing,
        }
    }

    fn line(root: bool, cfg: &SandboxConfig) -> String {
        command_line(
            &tools(root),
            cfg,
            &["/srv/workflows".into(), "/gone".into()],
            Path::new("/var/metis/runs/alice/r1"),
            2_000_000_042,
            &[
                "sh".to_owned(),
                "/srv/workflows/ok.sh".to_owned(),
                "a b".to_owned(),
            ],
            &fake,
        )
        .join(" ")
    }

    #[test]
    fn as_root_the_run_drops_to_its_own_uid_without_capabilities() {
        let cfg = SandboxConfig::default();
        assert_eq!(
            line(true, &cfg),
            "/usr/bin/bwrap --die-with-parent --new-session --unshare-pid --unshare-ipc \
             --unshare-uts --unshare-cgroup-try --proc /proc --dev /dev \
             --perms 1777 --size 1073741824 --tmpfs /tmp --perms 1777 --size 1073741824 --tmpfs /dev/shm \
             --ro-bind /usr /usr --symlink usr/bin /bin \
             --symlink usr/lib /lib --ro-bind /etc /etc \
             --perms 0755 --dir /srv --ro-bind /srv/workflows /srv/workflows \
             --perms 0755 --dir /var --perms 0755 --dir /var/metis --perms 0755 --dir /var/metis/runs \
             --perms 0755 --dir /var/metis/runs/alice \
             --bind /var/metis/runs/alice/r1 /var/metis/runs/alice/r1 --chdir /var/metis/runs/alice/r1 \
             --cap-drop ALL --cap-add CAP_DAC_READ_SEARCH --cap-add CAP_SETUID --cap-add CAP_SETGID \
             --cap-add CAP_SETPCAP -- \
             /usr/bin/setpriv --reuid=2000000042 --regid=2000000042 --clear-groups --inh-caps=-all \
             --bounding-set=-all --no-new-privs -- /usr/bin/prlimit --nproc=1024 -- \
             sh /srv/workflows/ok.sh a b"
        );
    }

    #[test]
    fn as_another_user_the_run_gets_a_user_namespace_and_no_setpriv() {
        let cfg = SandboxConfig {
            network: false,
            pids_max: 0,
            memory_max_bytes: 1 << 30,
            ..SandboxConfig::default()
        };
        let l = line(false, &cfg);
        assert!(
            l.contains(
                "--unshare-net --unshare-user --uid 2000000042 --gid 2000000042 --disable-userns"
            ),
            "{l}"
        );
        assert!(!l.contains("setpriv") && !l.contains("CAP_"), "{l}");
        assert!(
            l.ends_with("-- /usr/bin/prlimit --as=1073741824 -- sh /srv/workflows/ok.sh a b"),
            "{l}"
        );
    }

    #[test]
    fn a_parameter_stays_one_argument_after_the_wrapper() {
        let argv = command_line(
            &tools(true),
            &SandboxConfig::default(),
            &[],
            Path::new("/w"),
            7,
            &["sh".to_owned(), "--x; rm -rf /".to_owned()],
            &fake,
        );
        assert_eq!(argv.last().map(String::as_str), Some("--x; rm -rf /"));
    }

    #[test]
    fn identities_are_unique_among_the_runs_in_flight_and_come_back() {
        let sandbox = Sandbox {
            tools: Some(tools(false)),
            cfg: SandboxConfig {
                uid_first: 5000,
                uid_count: 3,
                ..SandboxConfig::default()
            },
            roots: Vec::new(),
            in_use: Arc::default(),
        };
        let a = sandbox.identity("same");
        let b = sandbox.identity("same");
        let c = sandbox.identity("same");
        let mut uids = [a.uid(), b.uid(), c.uid()];
        uids.sort_unstable();
        assert_eq!(uids, [5000, 5001, 5002]);
        let freed = b.uid();
        drop(b);
        assert_eq!(sandbox.identity("same").uid(), freed);
    }

    #[test]
    fn a_signal_is_read_back_from_the_exit_status() {
        use std::os::unix::process::ExitStatusExt;
        let sandbox = Sandbox {
            tools: Some(tools(true)),
            cfg: SandboxConfig::default(),
            roots: Vec::new(),
            in_use: Arc::default(),
        };
        let status = |code: i32| std::process::ExitStatus::from_raw(code << 8);
        assert_eq!(sandbox.exit(status(143)).signal, Some(15));
        assert_eq!(sandbox.exit(status(3)).code, Some(3));
        assert_eq!(sandbox.exit(status(0)).code, Some(0));
    }

    /// A real sandbox (bubblewrap must be installed: `scripts/setup unit`), a hostile
    /// workflow: it detaches a daemon, looks for the engine and reads what it can.
    #[tokio::test]
    async fn a_detached_daemon_dies_with_its_run_and_the_engine_stays_out_of_sight() {
        let tmp = tempfile::tempdir().unwrap();
        let roots = tmp.path().join("workflows");
        std::fs::create_dir_all(&roots).unwrap();
        let script = roots.join("hostile.sh");
        std::fs::write(
            &script,
            r#"echo "uid $(id -u)"
echo "pidns $(readlink /proc/self/ns/pid)"
setsid sh -c 'sleep 300; :' metis-sandbox-test-daemon &
echo "visible $(ls /proc | grep -c '^[0-9]')"
cat /proc/1/environ >/dev/null 2>&1 && echo 'init environ readable'
cat "$SECRET" 2>/dev/null && echo 'secret readable'
echo "home $(pwd)"
echo x > /tmp/t && echo x > /dev/shm/t && echo "tmp writable"
echo done
"#,
        )
        .unwrap();
        let secret = tmp.path().join("secret");
        std::fs::write(&secret, "engine secret").unwrap();
        let base = tmp.path().join("runs");
        let mut config = common::FullEngineConfig::parse(
            "engine: {name: e, version: '1', workflowTypes: [SH], workflowTypeVersions: ['1'], commandTemplate: 'sh {workflow_url}'}",
            Path::new("t.yaml"),
        )
        .unwrap();
        config.engine.allowed_workflow_roots = vec![roots.display().to_string()];
        config.runs.workdir.base.clone_from(&base);
        let sandbox = Sandbox::open(&config, false, &[]).await.unwrap();
        assert_eq!(sandbox.kind(), Kind::Bubblewrap);
        let workdir = base.join("alice").join("r1");
        crate::workdir::create(&base, &workdir).await.unwrap();
        let identity = sandbox.identity("r1");
        sandbox.prepare(&identity, &workdir).await.unwrap();
        let argv = sandbox.wrap(
            &identity,
            &workdir,
            &["sh".to_owned(), script.display().to_string()],
        );
        let env = [
            ("PATH".to_owned(), crate::process::DEFAULT_PATH.to_owned()),
            ("SECRET".to_owned(), secret.display().to_string()),
        ];
        let (child, _) = crate::process::spawn(&argv, &workdir, &env).unwrap();
        let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{out:?}");
        let field = |name: &str| -> String {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("no '{name}' line in {text}"))
                .to_owned()
        };
        let me = nix::unistd::geteuid().as_raw();
        let uid: u32 = field("uid ").parse().unwrap();
        assert_eq!(uid, identity.uid(), "{text}");
        assert!(uid != 0 && uid != me, "{text}");
        // bwrap's init, the script, its daemon, the command substitution, ls and grep: a
        // handful, none of the host's hundreds.
        let visible: usize = field("visible ").parse().unwrap();
        assert!(visible <= 10, "{text}");
        assert!(!text.contains("readable"), "{text}");
        assert_eq!(field("home "), workdir.display().to_string(), "{text}");
        assert!(text.contains("tmp writable"), "{text}");
        let ns = field("pidns ");
        assert_ne!(
            Some(ns.clone()),
            pid_namespace(i32::try_from(std::process::id()).unwrap())
        );
        // The daemon died with the run. (Found by its mark, not by the namespace's number,
        // which the kernel may already have given to another test's sandbox.)
        test_support::wait_for(
            "the sandbox's daemon to be gone",
            Duration::from_secs(10),
            || async {
                let left = test_support::processes_marked("metis-sandbox-test-daemon");
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("still alive: {left:?}"))
                }
            },
        )
        .await
        .unwrap();
    }

    /// A layout that would show a workflow every workdir or a secret is refused at start-up,
    /// naming what and where.
    #[test]
    fn the_engine_refuses_to_expose_workdirs_or_secrets() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let shared = tmp.path().join("shared");
        std::fs::create_dir_all(shared.join("runs")).unwrap();
        let creds = shared.join("nats.creds");
        std::fs::write(&creds, "secret").unwrap();
        let sandbox = |root: bool| Sandbox {
            tools: Some(tools(root)),
            cfg: SandboxConfig {
                read_only_paths: vec![shared.clone()],
                ..SandboxConfig::default()
            },
            roots: Vec::new(),
            in_use: Arc::default(),
        };
        let err = sandbox(true)
            .check_exposure(&shared.join("runs"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("workdir base"), "{err}");
        let elsewhere = tmp.path().join("elsewhere");
        let secrets = [("NATS_CREDS_FILE", creds.clone())];
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
        // As root, a file only root reads is safe from the run's uid; in a user namespace the
        // workflow is the engine's uid to the host, so it is not.
        assert!(sandbox(true).check_exposure(&elsewhere, &secrets).is_ok());
        let err = sandbox(false)
            .check_exposure(&elsewhere, &secrets)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("NATS_CREDS_FILE") && err.contains("engine's uid"),
            "{err}"
        );
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = sandbox(true)
            .check_exposure(&elsewhere, &secrets)
            .unwrap_err()
            .to_string();
        assert!(err.contains("world-readable"), "{err}");
    }

    #[test]
    fn the_parent_is_read_past_a_command_name_with_spaces() {
        let me = i32::try_from(std::process::id()).unwrap();
        assert_eq!(
            parent_of(me),
            Some(i32::try_from(std::os::unix::process::parent_id()).unwrap())
        );
    }
}
