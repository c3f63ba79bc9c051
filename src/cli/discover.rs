//! Which agents a CLI command talks to.
//!
//! `--socket` names one agent. Without it, a running sandbox's agents are found
//! through its node list (all nodes, or one with `--node`); otherwise the default
//! socket of an agent on this machine is used.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// Where a sandbox keeps its state, unless `PORIN_SANDBOX_DIR` says otherwise.
pub const DEFAULT_SANDBOX_DIR: &str = "/var/run/porin/sandbox";

/// The sandbox's state directory.
pub fn sandbox_dir() -> PathBuf {
    std::env::var_os("PORIN_SANDBOX_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SANDBOX_DIR))
}

/// Where the sandbox records its nodes for the CLI.
pub fn sandbox_nodes_file() -> PathBuf {
    sandbox_dir().join("nodes.json")
}
/// The agent socket when no sandbox is running.
pub const DEFAULT_AGENT_SOCKET: &str = "/var/run/porin/agent.sock";

/// One agent the CLI can reach.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentTarget {
    pub node: String,
    /// The agent API socket.
    pub socket: PathBuf,
    /// The Hubble API socket served by the observe plugin.
    pub hubble_socket: PathBuf,
    /// The node's network namespace (for commands that must run inside it).
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// Agent metrics address inside the node's namespace.
    #[serde(default)]
    pub metrics_address: Option<String>,
}

/// The agents a command should talk to.
pub fn targets(socket: Option<&Path>, node: Option<&str>) -> Result<Vec<AgentTarget>> {
    if let Some(socket) = socket {
        let dir = socket.parent().unwrap_or(Path::new("/"));
        return Ok(vec![AgentTarget {
            node: node.unwrap_or("local").to_string(),
            socket: socket.to_path_buf(),
            hubble_socket: dir.join(porin_observe::HUBBLE_SOCKET_NAME),
            netns: None,
            metrics_address: None,
        }]);
    }
    let sandbox = sandbox_nodes_file();
    if sandbox.exists() {
        let text = std::fs::read_to_string(&sandbox)
            .with_context(|| format!("reading the sandbox node list {}", sandbox.display()))?;
        let all: Vec<AgentTarget> = serde_json::from_str(&text)
            .with_context(|| format!("parsing the sandbox node list {}", sandbox.display()))?;
        return select(all, node);
    }
    let socket = PathBuf::from(DEFAULT_AGENT_SOCKET);
    Ok(vec![AgentTarget {
        node: node.unwrap_or("local").to_string(),
        hubble_socket: socket.with_file_name(porin_observe::HUBBLE_SOCKET_NAME),
        socket,
        netns: None,
        metrics_address: None,
    }])
}

fn select(all: Vec<AgentTarget>, node: Option<&str>) -> Result<Vec<AgentTarget>> {
    let Some(node) = node else { return Ok(all) };
    let names: Vec<String> = all.iter().map(|t| t.node.clone()).collect();
    let chosen: Vec<AgentTarget> = all.into_iter().filter(|t| t.node == node).collect();
    if chosen.is_empty() {
        bail!(
            "no node {node} in the sandbox (nodes: {})",
            names.join(", ")
        );
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(node: &str) -> AgentTarget {
        AgentTarget {
            node: node.to_string(),
            socket: PathBuf::from(format!("/run/{node}.sock")),
            hubble_socket: PathBuf::from(format!("/run/{node}-hubble.sock")),
            netns: None,
            metrics_address: None,
        }
    }

    #[test]
    fn node_filter_picks_one_or_names_the_choices() {
        let all = vec![target("node-1"), target("node-2")];
        let one = select(all.clone(), Some("node-2")).expect("node-2 exists");
        assert_eq!(one, vec![target("node-2")]);
        let err = select(all, Some("node-9")).expect_err("node-9 does not exist");
        assert!(err.to_string().contains("node-1, node-2"), "{err}");
    }

    #[test]
    fn explicit_socket_wins() {
        let t = targets(Some(Path::new("/tmp/x/agent.sock")), None).expect("socket");
        assert_eq!(t[0].hubble_socket, PathBuf::from("/tmp/x/hubble.sock"));
    }
}
