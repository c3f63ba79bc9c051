//! The `[agent]` section of `porin.toml`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// Where the agent reads cluster state from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Datastore {
    /// Watch a Kubernetes API server (default).
    #[default]
    Kubernetes,
    /// Read Kubernetes YAML from `manifests` directories; no API server. Agents on
    /// the same machine share published state through `runtime_dir`.
    Local,
}

/// `manifests` accepts a single directory or a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

/// `[agent]` as written in the file: everything optional, unknown keys rejected.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAgent {
    pub node_name: Option<String>,
    pub datastore: Option<Datastore>,
    pub manifests: Option<OneOrMany>,
    pub runtime_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub run_dir: Option<PathBuf>,
    pub api_socket: Option<PathBuf>,
    pub metrics_address: Option<SocketAddr>,
    pub pin_root: Option<PathBuf>,
    pub pod_cidr: Option<Ipv4Net>,
    pub node_ip: Option<IpAddr>,
    pub enable_ipv6: Option<bool>,
    pub pod_cidr_v6: Option<Ipv6Net>,
    pub node_ip_v6: Option<Ipv6Addr>,
    pub cgroup_path: Option<PathBuf>,
    pub map_pressure_interval_seconds: Option<u64>,
    pub log_level: Option<String>,
}

/// The agent's settings with every default applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentConfig {
    /// This node's name. Default: `$PORIN_NODE_NAME`, else the machine's hostname.
    pub node_name: String,
    /// `"kubernetes"` (default) or `"local"`.
    pub datastore: Datastore,
    /// Directories of Kubernetes YAML read in local mode. Required when
    /// `datastore = "local"`; a string or a list of strings in the file.
    pub manifests: Vec<PathBuf>,
    /// State published by agents for each other in local mode (nodes, endpoints,
    /// identities). Default: `/var/run/porin/cluster`.
    pub runtime_dir: PathBuf,
    /// State kept across restarts (IPAM, endpoints). Default:
    /// `/var/lib/porin/<node_name>`.
    pub state_dir: PathBuf,
    /// Directory for sockets (agent API, Hubble). Default: `/var/run/porin`, so
    /// the Hubble socket is the documented `/var/run/porin/hubble.sock`. Several
    /// agents on one machine (the sandbox) must set it per node, e.g.
    /// `/var/run/porin/<node_name>`.
    pub run_dir: PathBuf,
    /// The agent API socket. Default: `<run_dir>/agent.sock`.
    pub api_socket: PathBuf,
    /// Agent metrics listener. Default: `0.0.0.0:9962` (Cilium's port).
    pub metrics_address: SocketAddr,
    /// Root of the bpffs pins; this node pins under `<pin_root>/<node_name>`.
    /// Default: `/sys/fs/bpf/porin`.
    pub pin_root: PathBuf,
    /// The node's IPv4 pod CIDR for host-scope IPAM. Required in local mode; with
    /// Kubernetes it defaults to the Node's `spec.podCIDR` (filled in later).
    pub pod_cidr: Option<Ipv4Net>,
    /// The node's address on the underlay. Default: discovered at runtime.
    pub node_ip: Option<IpAddr>,
    /// Dual stack (Cilium's `enable-ipv6`, Helm `ipv6.enabled`): pods get an IPv6
    /// address from `pod_cidr_v6` next to their IPv4 one. Default: false (pods are
    /// IPv4-only, IPv6 is disabled on their interface).
    pub enable_ipv6: bool,
    /// The node's IPv6 pod CIDR (a ULA /64 such as `fd00:10:1::/64`). Required with
    /// `enable_ipv6`. A pod's IPv6 address carries the host part of its IPv4 one
    /// (10.200.1.5 -> fd00:10:1::5), so one allocation serves both families.
    pub pod_cidr_v6: Option<Ipv6Net>,
    /// The node's IPv6 address on the underlay: other nodes route this node's IPv6 pod
    /// CIDR through it. Required with `enable_ipv6` for pods on other nodes to be reached.
    pub node_ip_v6: Option<Ipv6Addr>,
    /// The cgroup v2 where socket programs (socket-level load balancing) attach; they
    /// apply to every process of its subtree. Default: the root cgroup, i.e. the cgroup2
    /// mount found in `/proc/self/mounts`. Several agents on one machine (the sandbox) must
    /// each set their node's cgroup.
    pub cgroup_path: Option<PathBuf>,
    /// Seconds between two counts of the datapath maps for `cilium_bpf_map_pressure`
    /// (conntrack, NAT, affinity, ipcache, policy...; the lb plugin's service maps are
    /// reported from its mirror instead). 0 turns the sampling off. Default: 30.
    pub map_pressure_interval_seconds: u64,
    /// A `tracing` filter directive. Default: `"info"`.
    pub log_level: String,
}

/// Environment variable naming the node when `node_name` is not set.
pub const NODE_NAME_ENV: &str = "PORIN_NODE_NAME";
/// Default agent API socket name inside `run_dir`.
pub const API_SOCKET_NAME: &str = "agent.sock";
/// Default metrics listener.
pub const DEFAULT_METRICS_ADDRESS: &str = "0.0.0.0:9962";
/// Default seconds between two map pressure samplings.
pub const DEFAULT_MAP_PRESSURE_INTERVAL_SECONDS: u64 = 30;
/// Default bpffs root.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/porin";
/// Default shared directory of local mode.
pub const DEFAULT_RUNTIME_DIR: &str = "/var/run/porin/cluster";
/// Default socket directory.
pub const DEFAULT_RUN_DIR: &str = "/var/run/porin";
/// Parent of the default per-node state directory.
pub const DEFAULT_STATE_ROOT: &str = "/var/lib/porin";

impl AgentConfig {
    /// Where this node's programs, maps and links are pinned.
    pub fn pin_dir(&self) -> PathBuf {
        self.pin_root.join(&self.node_name)
    }

    pub(crate) fn resolve(raw: RawAgent, hostname: impl FnOnce() -> String) -> Self {
        let node_name = raw.node_name.unwrap_or_else(hostname);
        let run_dir = raw
            .run_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR));
        let metrics_address = raw
            .metrics_address
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 9962)));
        Self {
            datastore: raw.datastore.unwrap_or_default(),
            manifests: match raw.manifests {
                None => Vec::new(),
                Some(OneOrMany::One(p)) => vec![p],
                Some(OneOrMany::Many(v)) => v,
            },
            runtime_dir: raw
                .runtime_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_RUNTIME_DIR)),
            state_dir: raw
                .state_dir
                .unwrap_or_else(|| Path::new(DEFAULT_STATE_ROOT).join(&node_name)),
            api_socket: raw
                .api_socket
                .unwrap_or_else(|| run_dir.join(API_SOCKET_NAME)),
            run_dir,
            metrics_address,
            pin_root: raw
                .pin_root
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PIN_ROOT)),
            pod_cidr: raw.pod_cidr,
            node_ip: raw.node_ip,
            enable_ipv6: raw.enable_ipv6.unwrap_or(false),
            pod_cidr_v6: raw.pod_cidr_v6,
            node_ip_v6: raw.node_ip_v6,
            cgroup_path: raw.cgroup_path,
            map_pressure_interval_seconds: raw
                .map_pressure_interval_seconds
                .unwrap_or(DEFAULT_MAP_PRESSURE_INTERVAL_SECONDS),
            log_level: raw.log_level.unwrap_or_else(|| "info".to_string()),
            node_name,
        }
    }
}

/// The machine's hostname, for the default `node_name`.
/// The default node name: `PORIN_NODE_NAME` (the Helm chart sets it from the
/// pod's `spec.nodeName`, which can differ from the hostname), else the hostname.
pub(crate) fn hostname() -> String {
    if let Some(name) = std::env::var(NODE_NAME_ENV).ok().filter(|s| !s.is_empty()) {
        return name;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string())
}
