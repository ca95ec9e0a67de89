//! The NATS topology a stack runs on: one server, or a JetStream cluster of
//! [`CLUSTER_SIZE`] servers with routes (`E2E_NATS=single|cluster`, default `single`; a
//! scenario can ask in code through `StackOptions::nats`).
//!
//! A cluster's servers are started with `--no_advertise`: a client only ever dials the host
//! addresses the harness hands it (`NATS_URL` lists all of them), never an address a server
//! would advertise from inside its container. It is ready once every server routes to the
//! others and they agree on an elected JetStream meta leader.

use anyhow::{Result, bail};

/// Servers in a cluster.
pub const CLUSTER_SIZE: usize = 3;

/// One server or a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One `nats-server -js`.
    Single,
    /// [`CLUSTER_SIZE`] servers with routes, streams and buckets replicated 3×.
    Cluster,
}

impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single => "single",
            Self::Cluster => "cluster",
        })
    }
}

/// Reads a topology setting (`E2E_NATS`'s value); unset or empty is `single`.
pub fn choose(setting: Option<&str>) -> Result<Topology> {
    match setting.map(str::trim).filter(|s| !s.is_empty()) {
        None | Some("single") => Ok(Topology::Single),
        Some("cluster") => Ok(Topology::Cluster),
        Some(other) => bail!("E2E_NATS must be single or cluster, got '{other}'"),
    }
}

/// [`choose`] with the real environment.
pub fn from_env() -> Result<Topology> {
    choose(std::env::var("E2E_NATS").ok().as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings() {
        assert_eq!(choose(None).unwrap(), Topology::Single);
        assert_eq!(choose(Some("cluster")).unwrap(), Topology::Cluster);
        assert!(
            choose(Some("mesh"))
                .unwrap_err()
                .to_string()
                .contains("E2E_NATS")
        );
    }
}
