//! The orchestration behind `porin sandbox up|down|exec`, written against
//! [`AgentControl`] so it does not depend on the agent crate.
//!
//! Layout of a state directory:
//! ```text
//! STATE_DIR/state.json           everything made (see crate::state)
//! STATE_DIR/nodes/NODE/porin.toml, agent.sock, hubble.sock
//! STATE_DIR/logs/agent_NODE.log, NS_POD.log
//! ```

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::manifests::{self, ManifestError};
use crate::placement::{self, PlacementError};
use crate::pod::Pod;
use crate::process::{Process, ProcessError};
use crate::state::{self, NodeRecord, PodRecord, StateError};
use crate::sweep::{self, SweepError, SweepReport};
use crate::topology::{Cluster, Node, TopologyError};

/// Errors returned by an [`AgentControl`] implementation.
pub type AgentError = Box<dyn std::error::Error + Send + Sync>;

/// Port of the agent's metrics inside a node's namespace.
pub const METRICS_PORT: u16 = 9962;
/// Root of pin directories; each node gets `PIN_ROOT/<node netns name>`.
pub const PIN_ROOT: &str = "/sys/fs/bpf/porin";

/// Errors of the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Sweep(#[from] SweepError),
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error("pod {pod}: {source}")]
    Process {
        pod: String,
        #[source]
        source: ProcessError,
    },
    #[error("a sandbox is already up ({0} exists): run `porin sandbox down` first")]
    AlreadyUp(PathBuf),
    #[error("no sandbox is up: {0} does not exist")]
    NotUp(PathBuf),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("agent on {node}: {action}: {source}")]
    Agent {
        node: String,
        action: &'static str,
        #[source]
        source: AgentError,
    },
    #[error("no pod {0} in the sandbox")]
    NoSuchPod(String),
    #[error("the sandbox has no external client namespace (it was brought up without one)")]
    NoExternalClient,
    #[error("pod name {name} is ambiguous; use one of: {candidates}")]
    AmbiguousPod { name: String, candidates: String },
    #[error("empty command")]
    EmptyCommand,
    #[error("cannot run `{command}`: {source}")]
    Exec {
        command: String,
        #[source]
        source: std::io::Error,
    },
}

/// What the agent of one node is given.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// `node-1`, ...: the agent's node name.
    pub name: String,
    /// 1-based.
    pub index: usize,
    pub netns_name: String,
    /// /run/netns/NAME: spawn the agent here.
    pub netns: PathBuf,
    /// cgroup directory: spawn the agent here.
    pub cgroup: PathBuf,
    pub underlay_if: String,
    pub underlay_ip: Ipv4Addr,
    pub pod_cidr: Ipv4Net,
    /// Dual stack only (`SandboxOptions::ipv6`).
    pub underlay_ip_v6: Option<Ipv6Addr>,
    pub pod_cidr_v6: Option<Ipv6Net>,
    /// bpffs directory for the node's pins.
    pub pin_dir: PathBuf,
    /// Directory for the agent's sockets.
    pub socket_dir: PathBuf,
    pub agent_socket: PathBuf,
    pub hubble_socket: PathBuf,
    /// `ip:port` of the metrics endpoint, inside the node's namespace.
    pub metrics_addr: String,
    pub config_path: PathBuf,
    pub agent_log: PathBuf,
    /// The manifest directory given to `sandbox up` (for a local datastore).
    pub manifests_dir: PathBuf,
}

/// A pod the agent is asked to connect.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub node: String,
    pub command: Vec<String>,
    pub netns_name: String,
    pub cgroup: PathBuf,
}

/// The agent, as the sandbox sees it.
pub trait AgentControl {
    /// Starts the node's agent inside the node's netns + cgroup (see
    /// [`Process::spawn`] with `node.netns` and `node.cgroup`); returns when
    /// the agent reports ready.
    fn start_agent(&self, node: &NodeSpec, config_path: &Path) -> Result<Process, AgentError>;

    /// Like a CNI ADD: the agent creates the pod's veth in `pod_netns` and
    /// returns the pod's IPv4 address.
    fn add_endpoint(
        &self,
        node: &NodeSpec,
        pod: &PodSpec,
        pod_netns: &Path,
    ) -> Result<Ipv4Addr, AgentError>;
}

/// Settings of `sandbox up`.
pub struct SandboxOptions {
    pub state_dir: PathBuf,
    /// Number of nodes (default 2).
    pub nodes: usize,
    /// Prefix of namespace and cgroup names (default `porin-sbx`).
    pub prefix: String,
    /// Add an external client namespace on the underlay (default true).
    pub external_client: bool,
    /// Route pod CIDRs between nodes via the underlay (default true).
    pub node_routes: bool,
    /// Dual stack: IPv6 on the underlay and IPv6 pod CIDRs (default false).
    pub ipv6: bool,
    /// Writes a node's `porin.toml`.
    pub config_writer: Box<dyn Fn(&NodeSpec) -> String>,
}

/// What `sandbox up` made, for the CLI to print.
#[derive(Debug, Clone)]
pub struct SandboxSummary {
    pub state_file: PathBuf,
    pub nodes: Vec<NodeRecord>,
    pub pods: Vec<PodRecord>,
}

/// `porin sandbox` operations.
#[derive(Debug)]
pub struct Sandbox;

impl SandboxOptions {
    /// Defaults: 2 nodes, prefix `porin-sbx`, external client, node routes.
    pub fn new(state_dir: &Path, config_writer: Box<dyn Fn(&NodeSpec) -> String>) -> Self {
        Self {
            state_dir: state_dir.to_owned(),
            nodes: 2,
            prefix: "porin-sbx".to_owned(),
            external_client: true,
            node_routes: true,
            ipv6: false,
            config_writer,
        }
    }
}

impl Sandbox {
    /// The state file of a state directory.
    pub fn state_file(state_dir: &Path) -> PathBuf {
        state_dir.join("state.json")
    }

    /// Builds the cluster from the manifests in `dir`, starts each node's
    /// agent, creates the pods, has the agent connect them and starts their
    /// commands. Everything keeps running after this returns; on error,
    /// everything made so far is removed.
    pub fn up(
        dir: &Path,
        opts: &SandboxOptions,
        agent: &dyn AgentControl,
    ) -> Result<SandboxSummary, SandboxError> {
        let state_file = Self::state_file(&opts.state_dir);
        if state_file.exists() {
            return Err(SandboxError::AlreadyUp(state_file));
        }
        let result = up_inner(dir, opts, agent, &state_file);
        if result.is_err() {
            // The half-made cluster is already torn down by its destructors;
            // this removes what they do not own (pin and socket
            // directories) and the state file.
            match sweep::sweep(&state_file) {
                Ok(report) if !report.is_clean() => {
                    tracing::warn!(errors = ?report.errors, "cleanup after a failed sandbox up");
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "cleanup after a failed sandbox up"),
            }
        }
        result
    }

    /// Removes everything `up` made (works after a crash too).
    pub fn down(state_dir: &Path) -> Result<SweepReport, SandboxError> {
        Ok(sweep::sweep(&Self::state_file(state_dir))?)
    }

    /// The recorded state of a running sandbox.
    pub fn status(state_dir: &Path) -> Result<state::State, SandboxError> {
        let file = Self::state_file(state_dir);
        if !file.exists() {
            return Err(SandboxError::NotUp(file));
        }
        Ok(state::load(&file)?)
    }

    /// Runs `cmd` in the pod `target` (`ns/pod`, or `pod` when unambiguous)
    /// inside its netns + cgroup, with stdio inherited; returns its status.
    pub fn exec(
        state_dir: &Path,
        target: &str,
        cmd: &[String],
    ) -> Result<ExitStatus, SandboxError> {
        let state = Self::status(state_dir)?;
        let pod = find_pod(&state.pods, target)?;
        let (program, args) = cmd.split_first().ok_or(SandboxError::EmptyCommand)?;
        let mut command = Command::new(program);
        command.args(args);
        let netns = Path::new(crate::netns::NETNS_DIR).join(&pod.netns);
        placement::place(&mut command, Some(&netns), pod.cgroup.as_deref())?;
        command.status().map_err(|source| SandboxError::Exec {
            command: cmd.join(" "),
            source,
        })
    }

    /// Runs `cmd` in the external client's namespace (a machine outside the cluster, on the
    /// underlay), with stdio inherited; returns its status.
    pub fn exec_external(state_dir: &Path, cmd: &[String]) -> Result<ExitStatus, SandboxError> {
        let state = Self::status(state_dir)?;
        let netns = state
            .netns
            .iter()
            .find(|n| n.ends_with(EXTERNAL_NETNS_SUFFIX))
            .ok_or(SandboxError::NoExternalClient)?;
        let (program, args) = cmd.split_first().ok_or(SandboxError::EmptyCommand)?;
        let mut command = Command::new(program);
        command.args(args);
        let netns = Path::new(crate::netns::NETNS_DIR).join(netns);
        placement::place(&mut command, Some(&netns), None)?;
        command.status().map_err(|source| SandboxError::Exec {
            command: cmd.join(" "),
            source,
        })
    }
}

/// The external client's namespace name ends with this (see `topology`).
const EXTERNAL_NETNS_SUFFIX: &str = "-external";

fn up_inner(
    dir: &Path,
    opts: &SandboxOptions,
    agent: &dyn AgentControl,
    state_file: &Path,
) -> Result<SandboxSummary, SandboxError> {
    let mut found = manifests::read_dir(dir)?;
    let cluster = Cluster::builder()
        .nodes(opts.nodes)
        .prefix(&opts.prefix)
        .state_file(state_file)
        .external_client(opts.external_client)
        .node_routes(opts.node_routes)
        .ipv6(opts.ipv6)
        .build()?;
    let node_names: Vec<String> = cluster.nodes().iter().map(|n| n.name.clone()).collect();
    manifests::assign_nodes(&mut found.pods, &node_names)?;

    // Until `persist`, dropping these tears everything down.
    let mut agents = Vec::new();
    let mut pods = Vec::new();
    let mut processes = Vec::new();
    let mut specs = Vec::new();
    for node in cluster.nodes() {
        let spec = node_spec(node, &opts.state_dir, dir);
        prepare_node(&cluster, &spec, opts)?;
        let process = agent
            .start_agent(&spec, &spec.config_path)
            .map_err(|source| SandboxError::Agent {
                node: spec.name.clone(),
                action: "start",
                source,
            })?;
        cluster
            .state()
            .record_pid(process.pid(), &format!("agent {}", spec.name))?;
        let pid = process.pid();
        cluster.state().update(|s| {
            if let Some(rec) = s.nodes.iter_mut().find(|n| n.name == spec.name) {
                rec.agent_pid = Some(pid);
            }
        })?;
        agents.push(process);
        specs.push(spec);
    }

    for manifest in &found.pods {
        let node_name = manifest.node_name.clone().unwrap_or_default();
        let index = specs.iter().position(|s| s.name == node_name).unwrap_or(0);
        let node_spec = &specs[index];
        let pod = cluster.add_pod(index, &manifest.namespace, &manifest.name)?;
        let spec = PodSpec {
            name: manifest.name.clone(),
            namespace: manifest.namespace.clone(),
            labels: manifest.labels.clone(),
            node: node_name.clone(),
            command: manifest.command.clone(),
            netns_name: pod.netns.name().to_owned(),
            cgroup: pod.cgroup.path().to_owned(),
        };
        let ip = agent
            .add_endpoint(node_spec, &spec, pod.netns.path())
            .map_err(|source| SandboxError::Agent {
                node: node_name.clone(),
                action: "add endpoint",
                source,
            })?;
        let log = opts
            .state_dir
            .join("logs")
            .join(format!("{}_{}.log", manifest.namespace, manifest.name));
        let process = spawn_pod(&pod, &manifest.command, &log)?;
        cluster.state().record_pid(process.pid(), &pod.key())?;
        let record = PodRecord {
            name: spec.name,
            namespace: spec.namespace,
            node: spec.node,
            netns: spec.netns_name,
            cgroup: Some(spec.cgroup),
            ip: Some(ip),
            pid: Some(process.pid()),
            log: Some(log),
        };
        cluster.state().update(|s| s.pods.push(record))?;
        processes.push(process);
        pods.push(pod);
    }

    let snapshot = cluster.state().snapshot();
    for process in processes.into_iter().chain(agents) {
        process.detach();
    }
    for pod in pods {
        pod.netns.keep();
        pod.cgroup.keep();
    }
    let state_file = cluster.persist();
    tracing::info!(state = %state_file.display(), "sandbox up");
    Ok(SandboxSummary {
        state_file,
        nodes: snapshot.nodes,
        pods: snapshot.pods,
    })
}

/// Finds `ns/pod` or an unambiguous `pod`.
pub fn find_pod<'a>(pods: &'a [PodRecord], target: &str) -> Result<&'a PodRecord, SandboxError> {
    let matches: Vec<&PodRecord> = match target.split_once('/') {
        Some((ns, name)) => pods
            .iter()
            .filter(|p| p.namespace == ns && p.name == name)
            .collect(),
        None => pods.iter().filter(|p| p.name == target).collect(),
    };
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(SandboxError::NoSuchPod(target.to_owned())),
        many => Err(SandboxError::AmbiguousPod {
            name: target.to_owned(),
            candidates: many
                .iter()
                .map(|p| format!("{}/{}", p.namespace, p.name))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

fn node_spec(node: &Node, state_dir: &Path, manifests_dir: &Path) -> NodeSpec {
    let socket_dir = state_dir.join("nodes").join(&node.name);
    NodeSpec {
        name: node.name.clone(),
        index: node.index,
        netns_name: node.netns.name().to_owned(),
        netns: node.netns.path().to_owned(),
        cgroup: node.cgroup.path().to_owned(),
        underlay_if: node.underlay_if.clone(),
        underlay_ip: node.underlay_ip,
        pod_cidr: node.pod_cidr,
        underlay_ip_v6: node.underlay_ip_v6,
        pod_cidr_v6: node.pod_cidr_v6,
        pin_dir: Path::new(PIN_ROOT).join(node.netns.name()),
        agent_socket: socket_dir.join("agent.sock"),
        hubble_socket: socket_dir.join("hubble.sock"),
        config_path: socket_dir.join("porin.toml"),
        socket_dir,
        metrics_addr: format!("{}:{METRICS_PORT}", node.underlay_ip),
        agent_log: state_dir
            .join("logs")
            .join(format!("agent_{}.log", node.name)),
        manifests_dir: manifests_dir.to_owned(),
    }
}

/// Records the node's directories and writes its config.
fn prepare_node(
    cluster: &Cluster,
    spec: &NodeSpec,
    opts: &SandboxOptions,
) -> Result<(), SandboxError> {
    let state = cluster.state();
    state.record_pin_dir(&spec.pin_dir)?;
    state.record_socket_dir(&spec.socket_dir)?;
    state.update(|s| {
        if let Some(rec) = s.nodes.iter_mut().find(|n| n.name == spec.name) {
            rec.pin_dir = Some(spec.pin_dir.clone());
            rec.config_path = Some(spec.config_path.clone());
            rec.agent_socket = Some(spec.agent_socket.clone());
            rec.metrics_addr = Some(spec.metrics_addr.clone());
        }
    })?;
    std::fs::create_dir_all(&spec.socket_dir).map_err(|source| SandboxError::Io {
        op: "create",
        path: spec.socket_dir.clone(),
        source,
    })?;
    std::fs::write(&spec.config_path, (opts.config_writer)(spec)).map_err(|source| {
        SandboxError::Io {
            op: "write",
            path: spec.config_path.clone(),
            source,
        }
    })
}

/// Starts the pod's command; a pod whose manifest names no command (its
/// image's entrypoint is unknown here) gets `sleep infinity`, so its
/// namespace has a process.
fn spawn_pod(pod: &Pod, command: &[String], log: &Path) -> Result<Process, SandboxError> {
    let mut cmd = match command.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args);
            cmd
        }
        None => {
            tracing::info!(pod = %pod.key(), "no command in the manifest: running `sleep infinity`");
            let mut cmd = Command::new("sleep");
            cmd.arg("infinity");
            cmd
        }
    };
    cmd.env("POD_NAME", &pod.name)
        .env("POD_NAMESPACE", &pod.namespace)
        .env("NODE_NAME", &pod.node);
    pod.spawn(cmd, log).map_err(|source| SandboxError::Process {
        pod: pod.key(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ns: &str, name: &str) -> PodRecord {
        PodRecord {
            name: name.to_owned(),
            namespace: ns.to_owned(),
            ..PodRecord::default()
        }
    }

    #[test]
    fn finds_pods_by_key_or_unique_name() {
        let pods = vec![record("a", "web"), record("b", "web"), record("a", "db")];
        assert!(find_pod(&pods, "db").is_ok());
        assert!(find_pod(&pods, "b/web").is_ok());
        assert!(matches!(
            find_pod(&pods, "web"),
            Err(SandboxError::AmbiguousPod { .. })
        ));
        assert!(matches!(
            find_pod(&pods, "x"),
            Err(SandboxError::NoSuchPod(_))
        ));
    }
}
