//! NATS and the fake OTLP receiver, on either backend.
//!
//! *local*: `nats-server -js` and `otlp-receiver` as child processes on ephemeral loopback
//! ports. *docker*: NATS from `testcontainers-modules` (image chosen by
//! [`crate::images::nats_image`]) and the receiver image the harness builds; both labelled so a
//! leftover from a killed run is swept at the next start, and removed when dropped (also on
//! panic). `E2E_KEEP=1` keeps containers (testcontainers' `keep` command) and processes.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use test_support::cluster::NatsCluster;
use test_support::{NatsEndpoint, NatsServer, Proc, bin, clean_command};
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use testcontainers_modules::nats::{Nats, NatsServerCmd};

use crate::backend::Backend;
use crate::images::{self, LABEL_OWNER, LABEL_PID};
use crate::progress::Timeline;
use crate::topology::{CLUSTER_SIZE, Topology};

/// Where the receiver listens, as seen from the host.
#[derive(Debug, Clone)]
pub struct ReceiverAddrs {
    /// OTLP/gRPC endpoint, `http://127.0.0.1:<port>`.
    pub grpc: String,
    /// HTTP base (ingest and query), `http://127.0.0.1:<port>`.
    pub http: String,
}

enum NatsHandle {
    Local(Box<NatsServer>),
    Docker(Box<ContainerAsync<Nats>>),
    LocalCluster(Box<NatsCluster>),
    DockerCluster(Box<DockerCluster>),
    Gone,
}

/// One server of a cluster on the docker backend.
struct DockerNode {
    name: String,
    container: String,
    handle: Option<ContainerAsync<GenericImage>>,
    client_port: u16,
    monitor_port: u16,
}

/// A cluster on the docker backend: containers on a network made for the stack.
struct DockerCluster {
    network: String,
    nodes: Vec<DockerNode>,
    image: GenericImage,
    cmd_base: Vec<String>,
    scenario: String,
}

enum Receiver {
    Local(Box<Proc>),
    Docker(Box<ContainerAsync<GenericImage>>),
    Stopped,
}

/// The running infrastructure.
pub struct Infra {
    /// Which backend.
    pub backend: Backend,
    /// `nats://127.0.0.1:<port>`.
    pub nats_url: String,
    /// The address with the credentials the services log in with (NATS runs with
    /// authorization on both backends, as in production).
    pub nats_endpoint: NatsEndpoint,
    /// The receiver's addresses (stable across [`Infra::stop_receiver`]/[`Infra::restart_receiver`]).
    pub receiver: ReceiverAddrs,
    nats: NatsHandle,
    recv: Receiver,
    docker_receiver_image: Option<GenericImage>,
    grpc_port: u16,
    http_port: u16,
    keep: bool,
    nats_frozen: bool,
}

impl Drop for Infra {
    /// Containers and processes go with the value, unless [`Infra::keep_running`] was called.
    /// A frozen NATS is thawed first (a fault is always undone).
    fn drop(&mut self) {
        if self.nats_frozen {
            match &self.nats {
                NatsHandle::Local(n) => {
                    let _ = n.proc.signal(nix::sys::signal::Signal::SIGCONT);
                }
                NatsHandle::Docker(c) => {
                    let _ = std::process::Command::new("docker")
                        .args(["unpause", c.id()])
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status();
                }
                NatsHandle::LocalCluster(c) => {
                    for n in &c.nodes {
                        if let Some(p) = &n.proc {
                            let _ = p.signal(nix::sys::signal::Signal::SIGCONT);
                        }
                    }
                }
                NatsHandle::DockerCluster(c) => {
                    for n in &c.nodes {
                        let _ = std::process::Command::new("docker")
                            .args(["unpause", &n.container])
                            .stdout(std::process::Stdio::null())
                            .stderr(std::process::Stdio::null())
                            .status();
                    }
                }
                NatsHandle::Gone => {}
            }
        }
        if let NatsHandle::DockerCluster(c) = &self.nats
            && !self.keep
        {
            // A partitioned server is not on the network: connect it back, so the network
            // goes with the last container.
            for n in &c.nodes {
                let _ = std::process::Command::new("docker")
                    .args(["network", "connect", &c.network, &n.container])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
        if self.keep {
            std::mem::forget(std::mem::replace(&mut self.nats, NatsHandle::Gone));
            std::mem::forget(std::mem::replace(&mut self.recv, Receiver::Stopped));
        }
    }
}

const START: Duration = Duration::from_secs(60);

/// A free loopback port in 20000–32767 (below the usual ephemeral range 32768–60999).
fn pinnable_port() -> Result<u16> {
    test_support::pinnable_port()
}

fn receiver_line(line: &str) -> Option<(u16, u16)> {
    let v: Value = serde_json::from_str(line).ok()?;
    let port = |k: &str| v.get(k)?.as_str()?.rsplit(':').next()?.parse::<u16>().ok();
    Some((port("grpc")?, port("http")?))
}

impl Infra {
    /// Starts NATS and the receiver for `scenario`, logging into `dir`.
    pub async fn start(
        backend: Backend,
        topology: Topology,
        scenario: &str,
        dir: &Path,
        timeline: &Timeline,
    ) -> Result<Self> {
        let mut infra = match backend {
            Backend::Local => Self::start_local(dir, timeline).await?,
            Backend::Docker => Self::start_docker(scenario, timeline).await?,
        };
        if topology == Topology::Cluster {
            // The single server above is replaced (its receiver is kept).
            match backend {
                Backend::Local => {
                    let step = timeline.step(format!(
                        "starting a {CLUSTER_SIZE}-server NATS cluster (local processes)"
                    ));
                    let cluster = NatsCluster::start(dir, CLUSTER_SIZE)
                        .await
                        .context("starting the local NATS cluster")?;
                    step.done();
                    infra.nats_endpoint = cluster.endpoint();
                    infra.nats = NatsHandle::LocalCluster(Box::new(cluster));
                }
                Backend::Docker => {
                    let cluster = DockerCluster::start(scenario, timeline).await?;
                    infra.nats_endpoint = cluster.endpoint(&infra.nats_endpoint.password);
                    infra.nats = NatsHandle::DockerCluster(Box::new(cluster));
                }
            }
            infra.nats_url = infra.nats_endpoint.url.clone();
        }
        Ok(infra)
    }

    /// The cluster server a client named `client` (its NATS connection name, e.g.
    /// `metis-api`) is connected to now, from each server's `/connz`.
    pub async fn nats_server_of(&self, client: &str) -> Result<String> {
        let ports: Vec<(String, u16)> = match &self.nats {
            NatsHandle::LocalCluster(c) => c
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.monitor_port))
                .collect(),
            NatsHandle::DockerCluster(c) => c
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.monitor_port))
                .collect(),
            _ => anyhow::bail!("nats_server_of needs a cluster (E2E_NATS=cluster)"),
        };
        // A frozen or cut-off server does not answer: a short deadline per server.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()?;
        for (name, port) in ports {
            let url = format!("http://127.0.0.1:{port}/connz?limit=1024");
            let Ok(reply) = http.get(&url).send().await else {
                continue;
            };
            let connz: Value = reply.json().await.unwrap_or_default();
            let found = connz["connections"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["name"].as_str() == Some(client));
            if found {
                return Ok(name);
            }
        }
        anyhow::bail!("no server of the cluster has a connection named {client}")
    }

    /// Whether NATS is a cluster.
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        matches!(
            self.nats,
            NatsHandle::LocalCluster(_) | NatsHandle::DockerCluster(_)
        )
    }

    /// The names of the NATS servers (`n1`.. on a cluster, `nats` alone).
    #[must_use]
    pub fn nats_servers(&self) -> Vec<String> {
        match &self.nats {
            NatsHandle::LocalCluster(c) => c.nodes.iter().map(|n| n.name.clone()).collect(),
            NatsHandle::DockerCluster(c) => c.nodes.iter().map(|n| n.name.clone()).collect(),
            _ => vec!["nats".to_owned()],
        }
    }

    /// SIGKILLs (docker: kills the container of) cluster server `name`.
    pub async fn kill_nats_server(&mut self, name: &str) -> Result<()> {
        match &mut self.nats {
            NatsHandle::LocalCluster(c) => c.kill(name).await,
            NatsHandle::DockerCluster(c) => c.stop(name, true).await,
            _ => anyhow::bail!("kill_nats_server needs a cluster (E2E_NATS=cluster)"),
        }
    }

    /// Starts cluster server `name` again with its data, on its address, and waits until the
    /// cluster has formed again (see [`Infra::wait_streams_led`] for the streams).
    pub async fn restart_nats_server(&mut self, name: &str) -> Result<()> {
        match &mut self.nats {
            NatsHandle::LocalCluster(c) => c.restart(name).await?,
            NatsHandle::DockerCluster(c) => {
                c.stop(name, true).await?;
                c.start_node(name).await?;
                c.wait_formed().await?;
            }
            _ => anyhow::bail!("restart_nats_server needs a cluster (E2E_NATS=cluster)"),
        }
        Ok(())
    }

    /// Waits until every stream (buckets included) reports a leader and every replica current:
    /// after a server came back, the cluster serves again only once each stream has elected
    /// one, and is steady once the returning server has caught up.
    pub async fn wait_streams_led(&self) -> Result<()> {
        let client = self.nats_endpoint.connect().await?;
        let js = async_nats::jetstream::new(client);
        test_support::wait_for(
            "every stream and bucket to have a leader",
            START,
            || async {
                use futures::StreamExt;
                let mut names = js.stream_names();
                let mut leaderless = Vec::new();
                while let Some(name) = names.next().await {
                    let name = name.map_err(|e| e.to_string())?;
                    // A stream without a leader does not answer: a short deadline per request
                    // instead of the client's default, so the wait ends when the leader is back.
                    let info = tokio::time::timeout(Duration::from_secs(1), async {
                        let mut stream = js.get_stream(&name).await.map_err(|e| e.to_string())?;
                        stream.info().await.cloned().map_err(|e| e.to_string())
                    })
                    .await;
                    match info {
                        // Led, and every other replica caught up and online: a server that
                        // rejoins after a partition may otherwise still force an election.
                        Ok(Ok(info))
                            if info.cluster.as_ref().is_none_or(|c| {
                                c.leader.is_some()
                                    && c.replicas.iter().all(|p| p.current && !p.offline)
                            }) => {}
                        Ok(Ok(_)) | Err(_) => leaderless.push(name),
                        Ok(Err(e)) => leaderless.push(format!("{name} ({e})")),
                    }
                }
                if leaderless.is_empty() {
                    Ok(())
                } else {
                    Err(format!("no leader yet: {leaderless:?}"))
                }
            },
        )
        .await
    }

    /// Cuts cluster server `name` off: on docker it leaves the stack network (the other
    /// servers and the services can no longer reach it; nothing is closed). The local
    /// backend's servers share the loopback interface, so there the server is frozen
    /// (SIGSTOP) instead: to the others and to its clients a cut-off server and a frozen one
    /// look alike — connections stay open and nothing answers.
    pub async fn partition_nats_server(&mut self, name: &str) -> Result<()> {
        match &mut self.nats {
            NatsHandle::DockerCluster(c) => c.network_op("disconnect", name),
            NatsHandle::LocalCluster(_) => self.freeze_nats_server(name).await,
            _ => anyhow::bail!("partition_nats_server needs a cluster (E2E_NATS=cluster)"),
        }
    }

    /// Undoes [`Infra::partition_nats_server`] and waits until the cluster has formed again.
    pub async fn heal_nats_server(&mut self, name: &str) -> Result<()> {
        match &mut self.nats {
            NatsHandle::DockerCluster(c) => {
                c.network_op("connect", name)?;
                c.wait_formed().await?;
            }
            NatsHandle::LocalCluster(_) => {
                self.thaw_nats_server(name).await?;
                if let NatsHandle::LocalCluster(c) = &self.nats {
                    c.wait_formed().await?;
                }
            }
            _ => anyhow::bail!("heal_nats_server needs a cluster (E2E_NATS=cluster)"),
        }
        Ok(())
    }

    /// Freezes cluster server `name` (local SIGSTOP, docker pause); the others see a silent
    /// peer. Dropping the [`Infra`] thaws it.
    pub async fn freeze_nats_server(&mut self, name: &str) -> Result<()> {
        match &self.nats {
            NatsHandle::LocalCluster(c) => c.signal(name, nix::sys::signal::Signal::SIGSTOP)?,
            NatsHandle::DockerCluster(c) => {
                images::docker(&["pause", c.container_of(name)?])?;
            }
            _ => anyhow::bail!(
                "freeze_nats_server needs a cluster (E2E_NATS=cluster); freeze_nats freezes a single server"
            ),
        }
        self.nats_frozen = true;
        Ok(())
    }

    /// Thaws what [`Infra::freeze_nats_server`] froze.
    pub async fn thaw_nats_server(&mut self, name: &str) -> Result<()> {
        match &self.nats {
            NatsHandle::LocalCluster(c) => c.signal(name, nix::sys::signal::Signal::SIGCONT)?,
            NatsHandle::DockerCluster(c) => {
                images::docker(&["unpause", c.container_of(name)?])?;
            }
            _ => anyhow::bail!("thaw_nats_server needs a cluster (E2E_NATS=cluster)"),
        }
        Ok(())
    }

    async fn start_local(dir: &Path, timeline: &Timeline) -> Result<Self> {
        let step = timeline.step("starting nats-server -js (local process)");
        let nats = NatsServer::start(dir)
            .await
            .context("starting nats-server (local)")?;
        step.done();
        let step = timeline.step("starting otlp-receiver (local process)");
        let (proc, grpc_port, http_port) = Self::local_receiver(dir, 0, 0).await?;
        step.done();
        Ok(Self {
            backend: Backend::Local,
            nats_url: nats.url.clone(),
            nats_endpoint: nats.endpoint(),
            receiver: addrs(grpc_port, http_port),
            nats: NatsHandle::Local(Box::new(nats)),
            recv: Receiver::Local(Box::new(proc)),
            docker_receiver_image: None,
            grpc_port,
            http_port,
            keep: false,
            nats_frozen: false,
        })
    }

    async fn local_receiver(dir: &Path, grpc: u16, http: u16) -> Result<(Proc, u16, u16)> {
        let mut cmd = clean_command(bin("otlp-receiver")?);
        cmd.args([
            "--grpc",
            &format!("127.0.0.1:{grpc}"),
            "--http",
            &format!("127.0.0.1:{http}"),
        ]);
        let mut proc = Proc::spawn("otlp-receiver", cmd, dir)?;
        let (g, h) = proc
            .wait_for_line("otlp-receiver to print its addresses", START, receiver_line)
            .await?;
        Ok((proc, g, h))
    }

    async fn start_docker(scenario: &str, timeline: &Timeline) -> Result<Self> {
        // Once per test process: leftovers of earlier, killed runs.
        static SWEPT: std::sync::Once = std::sync::Once::new();
        let mut swept = 0;
        let mut failure = None;
        SWEPT.call_once(|| match images::sweep_leftovers() {
            Ok(n) => swept = n,
            Err(e) => failure = Some(e),
        });
        if let Some(e) = failure {
            return Err(e.context("sweeping leftover e2e containers"));
        }
        if swept > 0 {
            timeline.note(format!(
                "removed {swept} leftover container(s) of earlier, killed runs"
            ));
        }
        let ((name, tag), why) = images::nats_image()?;
        let pid = std::process::id().to_string();
        let step = timeline.step(format!("starting NATS container {name}:{tag} ({why})"));
        // A pinned host port (below the ephemeral range), so a restarted container comes back
        // on the address the services know.
        let nats_host_port = pinnable_port()?;
        let password = test_support::random_hex(16);
        let nats = Nats::default()
            .with_cmd(
                &NatsServerCmd::default()
                    .with_jetstream()
                    .with_user(test_support::NATS_TEST_USER)
                    .with_password(&password),
            )
            .with_name(&name)
            .with_tag(&tag)
            .with_label(LABEL_OWNER, scenario)
            .with_label(LABEL_PID, &pid)
            .with_mapped_port(nats_host_port, 4222.tcp())
            .with_startup_timeout(START)
            .start()
            .await
            .with_context(|| format!("starting nats (container {name}:{tag})"))?;
        let nats_port = nats
            .get_host_port_ipv4(4222.tcp())
            .await
            .context("reading the NATS container's port")?;
        step.done();
        let image = images::receiver_image(timeline).await?;
        let step = timeline.step("starting otlp-receiver container");
        // Pinned host ports, so a restart (a collector outage) comes back on the same
        // addresses; chosen below the kernel's ephemeral range, where Docker and every
        // port-0 bind pick theirs, so nothing else takes them while the receiver is down.
        let ports = (pinnable_port()?, pinnable_port()?);
        let (recv, grpc_port, http_port) =
            Self::docker_receiver(&image, scenario, Some(ports)).await?;
        step.done();
        Ok(Self {
            backend: Backend::Docker,
            nats_url: format!("nats://127.0.0.1:{nats_port}"),
            nats_endpoint: NatsEndpoint {
                url: format!("nats://127.0.0.1:{nats_port}"),
                user: test_support::NATS_TEST_USER.to_owned(),
                password,
            },
            receiver: addrs(grpc_port, http_port),
            nats: NatsHandle::Docker(Box::new(nats)),
            recv: Receiver::Docker(Box::new(recv)),
            docker_receiver_image: Some(image),
            grpc_port,
            http_port,
            keep: false,
            nats_frozen: false,
        })
    }

    /// Starts the receiver container; `ports` pins the host ports (for a restart on the same
    /// addresses), otherwise Docker picks free ones. Returns it with its gRPC and HTTP ports.
    async fn docker_receiver(
        image: &GenericImage,
        scenario: &str,
        ports: Option<(u16, u16)>,
    ) -> Result<(ContainerAsync<GenericImage>, u16, u16)> {
        let request = image
            .clone()
            .with_exposed_port(4317.tcp())
            .with_exposed_port(4318.tcp())
            .with_wait_for(WaitFor::message_on_stdout("\"grpc\""))
            .with_cmd(["--grpc", "0.0.0.0:4317", "--http", "0.0.0.0:4318"])
            .with_label(LABEL_OWNER, scenario)
            .with_label(LABEL_PID, std::process::id().to_string())
            .with_startup_timeout(START);
        let request = match ports {
            Some((grpc, http)) => request
                .with_mapped_port(grpc, 4317.tcp())
                .with_mapped_port(http, 4318.tcp()),
            None => request,
        };
        let container = request
            .start()
            .await
            .context("starting otlp-receiver (container)")?;
        let grpc = container
            .get_host_port_ipv4(4317.tcp())
            .await
            .context("reading the receiver's gRPC port")?;
        let http = container
            .get_host_port_ipv4(4318.tcp())
            .await
            .context("reading the receiver's HTTP port")?;
        Ok((container, grpc, http))
    }

    /// Stops the receiver (the collector goes down); a restart reuses its addresses.
    pub async fn stop_receiver(&mut self) -> Result<()> {
        match std::mem::replace(&mut self.recv, Receiver::Stopped) {
            Receiver::Local(mut p) => p.kill().await?,
            Receiver::Docker(c) => c.rm().await.context("removing the receiver container")?,
            Receiver::Stopped => {}
        }
        Ok(())
    }

    /// Starts the receiver again on the same ports (with nothing stored).
    pub async fn restart_receiver(&mut self, scenario: &str, dir: &Path) -> Result<()> {
        self.recv = match (&self.docker_receiver_image, self.backend) {
            (Some(image), Backend::Docker) => Receiver::Docker(Box::new(
                Self::docker_receiver(image, scenario, Some((self.grpc_port, self.http_port)))
                    .await?
                    .0,
            )),
            _ => Receiver::Local(Box::new(
                Self::local_receiver(dir, self.grpc_port, self.http_port)
                    .await?
                    .0,
            )),
        };
        Ok(())
    }

    /// Restarts NATS with its JetStream data kept, on the same address: local, the same
    /// `nats-server` store dir and port; docker, the same container stopped and started
    /// (SIGKILL-like when `kill`). Returns once it accepts clients again.
    pub async fn restart_nats(&mut self, kill: bool) -> Result<()> {
        match &mut self.nats {
            NatsHandle::Local(n) => n.restart(kill).await.context("restarting nats-server")?,
            NatsHandle::Docker(c) => {
                c.stop_with_timeout(Some(if kill { 0 } else { 10 }))
                    .await
                    .context("stopping the NATS container")?;
                c.start()
                    .await
                    .context("starting the NATS container again")?;
            }
            NatsHandle::LocalCluster(c) => {
                for name in c.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>() {
                    c.kill(&name).await?;
                }
                for name in c.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>() {
                    c.start_server(&name)?;
                }
                c.wait_formed().await?;
                return self.wait_streams_led().await;
            }
            NatsHandle::DockerCluster(c) => {
                for name in c.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>() {
                    c.stop(&name, kill).await?;
                }
                for name in c.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>() {
                    c.start_node(&name).await?;
                }
                c.wait_formed().await?;
                return self.wait_streams_led().await;
            }
            NatsHandle::Gone => anyhow::bail!("NATS is not running"),
        }
        wait_nats_accepts(&self.nats_url).await
    }

    /// Freezes NATS (docker pause; local SIGSTOP): connections stay open, nothing answers.
    pub async fn freeze_nats(&mut self) -> Result<()> {
        match &self.nats {
            NatsHandle::Local(n) => n.proc.signal(nix::sys::signal::Signal::SIGSTOP)?,
            NatsHandle::Docker(c) => c.pause().await.context("pausing the NATS container")?,
            NatsHandle::LocalCluster(c) => {
                for n in &c.nodes {
                    c.signal(&n.name, nix::sys::signal::Signal::SIGSTOP)?;
                }
            }
            NatsHandle::DockerCluster(c) => {
                for n in &c.nodes {
                    images::docker(&["pause", &n.container])?;
                }
            }
            NatsHandle::Gone => anyhow::bail!("NATS is not running"),
        }
        self.nats_frozen = true;
        Ok(())
    }

    /// Thaws what [`Infra::freeze_nats`] froze.
    pub async fn thaw_nats(&mut self) -> Result<()> {
        match &self.nats {
            NatsHandle::Local(n) => n.proc.signal(nix::sys::signal::Signal::SIGCONT)?,
            NatsHandle::Docker(c) => c.unpause().await.context("unpausing the NATS container")?,
            NatsHandle::LocalCluster(c) => {
                for n in &c.nodes {
                    c.signal(&n.name, nix::sys::signal::Signal::SIGCONT)?;
                }
            }
            NatsHandle::DockerCluster(c) => {
                for n in &c.nodes {
                    images::docker(&["unpause", &n.container])?;
                }
            }
            NatsHandle::Gone => {}
        }
        self.nats_frozen = false;
        Ok(())
    }

    /// Leaves NATS and the receiver running when this value is dropped (`E2E_KEEP=1`).
    pub fn keep_running(&mut self) {
        self.keep = true;
    }

    /// Pids of the local processes (empty on the docker backend).
    #[must_use]
    pub fn pids(&self) -> Vec<u32> {
        let mut out = Vec::new();
        match &self.nats {
            NatsHandle::Local(n) => out.extend(n.proc.pid()),
            NatsHandle::LocalCluster(c) => out.extend(c.pids()),
            _ => {}
        }
        if let Receiver::Local(p) = &self.recv {
            out.extend(p.pid());
        }
        out
    }

    /// Where the NATS server logs go (docker: the container; local: `nats-server.log`).
    #[must_use]
    pub fn describe(&self) -> String {
        match (&self.nats, &self.recv) {
            (NatsHandle::Docker(n), _) => format!("docker (nats container {})", n.id()),
            (NatsHandle::Local(n), _) => format!("local (nats pid {:?})", n.proc.pid()),
            (NatsHandle::LocalCluster(c), _) => {
                format!(
                    "local, a {}-server NATS cluster (pids {:?})",
                    c.nodes.len(),
                    c.pids()
                )
            }
            (NatsHandle::DockerCluster(c), _) => format!(
                "docker, a {}-server NATS cluster on network {}",
                c.nodes.len(),
                c.network
            ),
            (NatsHandle::Gone, _) => "gone".to_owned(),
        }
    }
}

/// Waits until a NATS server at `url` greets a new connection with its `INFO` line.
async fn wait_nats_accepts(url: &str) -> Result<()> {
    let addr = url.trim_start_matches("nats://").to_owned();
    test_support::wait_for(
        &format!("NATS at {url} to accept clients"),
        START,
        || async {
            use tokio::io::AsyncReadExt;
            let mut stream = tokio::net::TcpStream::connect(&addr)
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4];
            tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut buf))
                .await
                .map_err(|_| "no INFO line yet".to_owned())?
                .map_err(|e| e.to_string())?;
            if &buf == b"INFO" {
                Ok(())
            } else {
                Err(format!("unexpected greeting {buf:?}"))
            }
        },
    )
    .await
}

fn addrs(grpc: u16, http: u16) -> ReceiverAddrs {
    ReceiverAddrs {
        grpc: format!("http://127.0.0.1:{grpc}"),
        http: format!("http://127.0.0.1:{http}"),
    }
}

impl DockerCluster {
    /// Starts [`CLUSTER_SIZE`] NATS containers on a network of their own and waits until the
    /// cluster has formed.
    async fn start(scenario: &str, timeline: &Timeline) -> Result<Self> {
        let ((name, tag), why) = images::nats_image()?;
        let pid = std::process::id();
        let network = format!("{}{scenario}-{pid}", images::NETWORK_PREFIX);
        let step = timeline.step(format!(
            "starting a {CLUSTER_SIZE}-server NATS cluster {name}:{tag} on network {network} ({why})"
        ));
        let names: Vec<String> = (1..=CLUSTER_SIZE).map(|i| format!("n{i}")).collect();
        let container = |n: &str| format!("{network}-{n}");
        let password = test_support::random_hex(16);
        let mut nodes = Vec::new();
        for n in &names {
            nodes.push(DockerNode {
                name: n.clone(),
                container: container(n),
                handle: None,
                client_port: pinnable_port()?,
                monitor_port: pinnable_port()?,
            });
        }
        let cmd_base = vec![
            "-c".to_owned(),
            "/cluster.conf".to_owned(),
            "-js".to_owned(),
            "--cluster_name".to_owned(),
            test_support::cluster::CLUSTER_NAME.to_owned(),
            "--cluster".to_owned(),
            "nats://0.0.0.0:6222".to_owned(),
            "--no_advertise=true".to_owned(),
            "-m".to_owned(),
            "8222".to_owned(),
            "--user".to_owned(),
            test_support::NATS_TEST_USER.to_owned(),
            "--pass".to_owned(),
            password,
        ];
        let mut cluster = Self {
            network,
            nodes,
            image: GenericImage::new(name, tag),
            cmd_base,
            scenario: scenario.to_owned(),
        };
        for n in &names {
            cluster.start_node(n).await?;
        }
        cluster.wait_formed().await?;
        step.done();
        Ok(cluster)
    }

    fn endpoint(&self, _single_password: &str) -> NatsEndpoint {
        NatsEndpoint {
            url: self
                .nodes
                .iter()
                .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
                .collect::<Vec<_>>()
                .join(","),
            user: test_support::NATS_TEST_USER.to_owned(),
            password: self.cmd_base.last().cloned().unwrap_or_default(),
        }
    }

    /// The container of server `name`.
    fn container_of(&self, name: &str) -> Result<&str> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .map(|n| n.container.as_str())
            .with_context(|| format!("no server {name} in the cluster"))
    }

    fn node(&mut self, name: &str) -> Result<&mut DockerNode> {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .with_context(|| format!("no server {name} in the cluster"))
    }

    /// Starts (the container of) server `name`: a fresh container the first time, the same
    /// one (same data, same ports) after a stop.
    async fn start_node(&mut self, name: &str) -> Result<()> {
        let routes: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.name != name)
            .map(|n| format!("nats://{}:6222", n.container))
            .collect();
        let mut cmd = self.cmd_base.clone();
        cmd.extend([
            "--server_name".to_owned(),
            name.to_owned(),
            "--routes".to_owned(),
            routes.join(","),
        ]);
        let (image, network, scenario) = (
            self.image.clone(),
            self.network.clone(),
            self.scenario.clone(),
        );
        let node = self.node(name)?;
        if let Some(c) = &node.handle {
            return c
                .start()
                .await
                .with_context(|| format!("starting NATS server {name} again"));
        }
        let container = image
            .with_wait_for(WaitFor::message_on_stderr("Server is ready"))
            .with_exposed_port(4222.tcp())
            .with_exposed_port(8222.tcp())
            .with_copy_to(
                "/cluster.conf",
                test_support::cluster::CLUSTER_CONF.as_bytes().to_vec(),
            )
            .with_cmd(cmd)
            .with_network(network)
            .with_container_name(node.container.clone())
            .with_label(LABEL_OWNER, scenario)
            .with_label(LABEL_PID, std::process::id().to_string())
            .with_mapped_port(node.client_port, 4222.tcp())
            .with_mapped_port(node.monitor_port, 8222.tcp())
            .with_startup_timeout(START)
            .start()
            .await
            .with_context(|| format!("starting NATS server {name} (container)"))?;
        node.handle = Some(container);
        Ok(())
    }

    /// Stops server `name` (at once when `kill`), keeping its container and data.
    async fn stop(&mut self, name: &str, kill: bool) -> Result<()> {
        let node = self.node(name)?;
        match &node.handle {
            Some(c) => c
                .stop_with_timeout(Some(if kill { 0 } else { 10 }))
                .await
                .with_context(|| format!("stopping NATS server {name}")),
            None => anyhow::bail!("server {name} was never started"),
        }
    }

    /// `docker network connect|disconnect` of server `name`.
    fn network_op(&mut self, op: &str, name: &str) -> Result<()> {
        let network = self.network.clone();
        let node = self.node(name)?;
        images::docker(&["network", op, &network, &node.container])
            .map(drop)
            .with_context(|| format!("docker network {op} {network} {}", node.container))
    }

    async fn wait_formed(&self) -> Result<()> {
        let servers: Vec<(String, u16)> = self
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.monitor_port))
            .collect();
        test_support::cluster::wait_formed(&servers).await
    }
}
