//! A JetStream cluster of `nats-server` processes on loopback: three servers (`n1`..`n3`)
//! with routes between them, separate stores, authorization on (as [`crate::NatsServer`]), and
//! `--no_advertise`, so a client only ever dials the addresses it was given. Ready once every
//! server sees the others and the JetStream meta leader is elected. Each server can be killed,
//! restarted on its ports with its store, frozen and thawed by name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::{NATS_TEST_USER, NatsEndpoint, Proc, clean_command, nats_server_bin, wait_for};

/// The prefix of a cluster's name (`--cluster_name`).
pub const CLUSTER_NAME: &str = "metis";

/// The configuration file every server of a test cluster (local or docker) also reads: route
/// pings every second, a peer dropped after 2 missed answers. The default (2 min) keeps a
/// partitioned peer's route, and the interest it had, alive for minutes: requests routed to it
/// are lost (a docker network partition saw direct gets time out for 45 s). A production
/// cluster wants the same short route ping; the book's Deployment page says so.
pub const CLUSTER_CONF: &str =
    "# written by the Metis test harness\ncluster {\n  ping_interval: \"1s\"\n  ping_max: 2\n}\n";

/// How long a cluster may take to form.
pub const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// One server of a [`NatsCluster`].
pub struct ClusterNode {
    /// `n1`, `n2`, …
    pub name: String,
    /// Client port on 127.0.0.1.
    pub client_port: u16,
    /// Route port.
    pub cluster_port: u16,
    /// Monitoring (HTTP) port.
    pub monitor_port: u16,
    /// The process, while it runs.
    pub proc: Option<Proc>,
    store: tempfile::TempDir,
    starts: usize,
}

/// A running cluster.
pub struct NatsCluster {
    /// Its servers.
    pub nodes: Vec<ClusterNode>,
    /// The password of [`NATS_TEST_USER`].
    pub password: String,
    /// `--cluster_name`: [`CLUSTER_NAME`] and a random suffix, so no two clusters on one host
    /// ever route to each other.
    pub name: String,
    log_dir: PathBuf,
}

impl NatsCluster {
    /// Starts `size` servers and waits until the cluster has formed.
    pub async fn start(log_dir: &Path, size: usize) -> Result<Self> {
        let mut nodes = Vec::new();
        for i in 1..=size {
            nodes.push(ClusterNode {
                name: format!("n{i}"),
                client_port: crate::pinnable_port()?,
                cluster_port: crate::pinnable_port()?,
                monitor_port: crate::pinnable_port()?,
                proc: None,
                store: tempfile::tempdir().context("creating a JetStream store dir")?,
                starts: 0,
            });
        }
        let mut cluster = Self {
            nodes,
            password: crate::random_hex(16),
            name: format!("{CLUSTER_NAME}-{}", crate::random_hex(3)),
            log_dir: log_dir.to_path_buf(),
        };
        for i in 0..size {
            cluster.spawn(i)?;
        }
        cluster.wait_formed().await?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let routes: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| format!("nats://127.0.0.1:{}", n.cluster_port))
            .collect();
        let cluster_name = self.name.clone();
        let node = &mut self.nodes[i];
        node.starts += 1;
        let conf = self.log_dir.join(format!("{}.conf", node.name));
        std::fs::write(&conf, CLUSTER_CONF)
            .with_context(|| format!("writing {}", conf.display()))?;
        let mut cmd = clean_command(nats_server_bin()?);
        cmd.arg("-c")
            .arg(&conf)
            .args(["-js", "-a", "127.0.0.1"])
            .args(["-p", &node.client_port.to_string()])
            .args(["-m", &node.monitor_port.to_string()])
            .args(["--server_name", &node.name, "--cluster_name", &cluster_name])
            .args([
                "--cluster",
                &format!("nats://127.0.0.1:{}", node.cluster_port),
            ])
            .args(["--routes", &routes.join(",")])
            .arg("--no_advertise=true")
            .args(["--user", NATS_TEST_USER, "--pass", &self.password, "-sd"])
            .arg(node.store.path());
        let log_name = if node.starts == 1 {
            format!("nats-{}", node.name)
        } else {
            format!("nats-{}-{}", node.name, node.starts)
        };
        node.proc = Some(Proc::spawn(&log_name, cmd, &self.log_dir)?);
        Ok(())
    }

    /// Every client address, comma-separated, with the credentials.
    #[must_use]
    pub fn endpoint(&self) -> NatsEndpoint {
        NatsEndpoint {
            url: self
                .nodes
                .iter()
                .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
                .collect::<Vec<_>>()
                .join(","),
            user: NATS_TEST_USER.to_owned(),
            password: self.password.clone(),
        }
    }

    fn index(&self, name: &str) -> Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .with_context(|| format!("no server {name} in the cluster"))
    }

    /// SIGKILLs server `name`.
    pub async fn kill(&mut self, name: &str) -> Result<()> {
        let i = self.index(name)?;
        match self.nodes[i].proc.take() {
            Some(mut p) => p.kill().await,
            None => bail!("server {name} is not running"),
        }
    }

    /// Starts server `name` (after [`NatsCluster::kill`]) without waiting for the cluster.
    pub fn start_server(&mut self, name: &str) -> Result<()> {
        let i = self.index(name)?;
        if self.nodes[i].proc.is_some() {
            bail!("server {name} is running");
        }
        self.spawn(i)
    }

    /// Starts server `name` again (same ports, same store) and waits until the cluster has
    /// formed again.
    pub async fn restart(&mut self, name: &str) -> Result<()> {
        let i = self.index(name)?;
        if let Some(mut p) = self.nodes[i].proc.take() {
            p.kill().await?;
        }
        self.spawn(i)?;
        self.wait_formed().await
    }

    /// Sends `signal` to server `name` (SIGSTOP freezes it, SIGCONT thaws it).
    pub fn signal(&self, name: &str, signal: nix::sys::signal::Signal) -> Result<()> {
        let i = self.index(name)?;
        match self.nodes[i].proc.as_ref() {
            Some(p) => p.signal(signal),
            None => bail!("server {name} is not running"),
        }
    }

    /// Process ids of the running servers.
    #[must_use]
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.proc.as_ref().and_then(Proc::pid))
            .collect()
    }

    /// Waits until every running server (not killed) routes to every other running one and
    /// reports the same elected JetStream meta leader.
    pub async fn wait_formed(&self) -> Result<()> {
        let running: Vec<(String, u16)> = self
            .nodes
            .iter()
            .filter(|n| n.proc.is_some())
            .map(|n| (n.name.clone(), n.monitor_port))
            .collect();
        wait_formed(&running).await
    }
}

/// Waits until each server of `servers` (name, monitoring port on 127.0.0.1) routes to all the
/// others and all report the same elected JetStream meta leader; the error says what was seen.
pub async fn wait_formed(servers: &[(String, u16)]) -> Result<()> {
    let http = reqwest::Client::new();
    let peers = servers.len().saturating_sub(1);
    wait_for(
        "the NATS cluster to form (routes up, a JetStream meta leader)",
        FORM_TIMEOUT,
        || {
            let http = http.clone();
            async move {
                let mut leaders = Vec::new();
                for (name, port) in servers {
                    let get = |path: &str| {
                        let http = http.clone();
                        let url = format!("http://127.0.0.1:{port}{path}");
                        async move {
                            http.get(&url)
                                .send()
                                .await
                                .map_err(|e| format!("{url}: {e}"))?
                                .json::<serde_json::Value>()
                                .await
                                .map_err(|e| format!("{url}: {e}"))
                        }
                    };
                    let routez = get("/routez").await?;
                    let routes = routez["num_routes"].as_u64().unwrap_or(0) as usize;
                    if routes < peers {
                        return Err(format!("{name} has {routes} of {peers} routes"));
                    }
                    let jsz = get("/jsz").await?;
                    let leader = jsz["meta_cluster"]["leader"].as_str().unwrap_or("");
                    if leader.is_empty() {
                        return Err(format!("{name} sees no JetStream meta leader"));
                    }
                    leaders.push(leader.to_owned());
                }
                leaders.sort();
                leaders.dedup();
                if leaders.len() == 1 {
                    Ok(())
                } else {
                    Err(format!("servers disagree on the meta leader: {leaders:?}"))
                }
            }
        },
    )
    .await
}
