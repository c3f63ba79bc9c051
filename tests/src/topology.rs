//! A cluster of nodes on one machine: an underlay namespace holding a
//! bridge, one namespace per node with a veth to that bridge, and
//! optionally an external client on the underlay.
//!
//! ```text
//!  underlay netns (br0 192.168.200.254/24)
//!    |-- n1 <-> ul0 in node-1 netns (192.168.200.1/24, pods 10.200.1.0/24)
//!    |-- n2 <-> ul0 in node-2 netns (192.168.200.2/24, pods 10.200.2.0/24)
//!    `-- ext <-> ul0 in external netns (192.168.200.250/24)
//! ```
//!
//! With `ipv6(true)` (dual stack) each node also gets `fd00:ffff::N/64` on `ul0`,
//! IPv6 forwarding, and the IPv6 pod CIDR `fd00:10:N::/64`; the external client gets
//! `fd00:ffff::fa/64`.
//!
//! Link names inside our namespaces need no suffix (nothing else lives
//! there); namespace and cgroup names carry the cluster's unique id.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::cgroup::{Cgroup, CgroupError};
use crate::link::{Ip, LinkError};
use crate::names;
use crate::netns::{NetNs, NetNsError};
use crate::pod::{PlainLinkError, Pod};
use crate::state::{NodeRecord, StateError, StateFile};

/// Name of the underlay interface in node and external namespaces.
pub const UNDERLAY_IF: &str = "ul0";
/// Name of the bridge in the underlay namespace.
pub const BRIDGE: &str = "br0";
/// Host part of the bridge's address on the underlay.
const BRIDGE_HOST: u8 = 254;
/// Host part of the external client's address on the underlay.
const EXTERNAL_HOST: u8 = 250;
/// Most nodes a cluster can have (host parts 1..=200 on the underlay).
pub const MAX_NODES: usize = 200;

/// Errors building or using a cluster.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error(transparent)]
    NetNs(#[from] NetNsError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    PlainLink(#[from] PlainLinkError),
    #[error("a cluster needs 1 to {MAX_NODES} nodes, not {0}")]
    NodeCount(usize),
    #[error("no node with index {index} (the cluster has {count})")]
    NoSuchNode { index: usize, count: usize },
    #[error("no node named {0}")]
    NoSuchNodeName(String),
}

/// Builds a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    nodes: usize,
    prefix: String,
    state_file: Option<PathBuf>,
    external_client: bool,
    node_routes: bool,
    mtu: Option<u32>,
    ipv6: bool,
}

/// A running cluster. Dropping it removes every namespace and cgroup it made
/// (and its state file); pods are separate values with their own drop.
#[derive(Debug)]
pub struct Cluster {
    id: String,
    prefix: String,
    state: Arc<StateFile>,
    own_state_file: bool,
    nodes: Vec<Node>,
    external: Option<ExternalClient>,
    underlay: Option<NetNs>,
    cgroup: Option<Cgroup>,
    link_counter: AtomicU32,
    armed: bool,
}

/// A node: a network namespace on the underlay, with a cgroup for its agent
/// and pods.
#[derive(Debug)]
pub struct Node {
    /// `node-1`, `node-2`, ...
    pub name: String,
    /// 1-based.
    pub index: usize,
    pub netns: NetNs,
    pub cgroup: Cgroup,
    /// Interface to the underlay inside the node's namespace.
    pub underlay_if: String,
    pub underlay_ip: Ipv4Addr,
    pub pod_cidr: Ipv4Net,
    /// Dual stack only: the node's IPv6 underlay address and pod CIDR.
    pub underlay_ip_v6: Option<Ipv6Addr>,
    pub pod_cidr_v6: Option<Ipv6Net>,
}

/// A namespace on the underlay standing for a client outside the cluster.
#[derive(Debug)]
pub struct ExternalClient {
    pub netns: NetNs,
    pub ip: Ipv4Addr,
    /// fd00:ffff::fa on the underlay, dual stack only: the client of IPv6 NodePorts.
    pub ip_v6: Option<Ipv6Addr>,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        Self {
            nodes: 2,
            prefix: "porin".to_owned(),
            state_file: None,
            external_client: false,
            node_routes: true,
            mtu: None,
            ipv6: false,
        }
    }
}

impl ClusterBuilder {
    /// Number of nodes (default 2).
    pub fn nodes(mut self, count: usize) -> Self {
        self.nodes = count;
        self
    }

    /// Prefix of namespace and cgroup names (default `porin`).
    pub fn prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.prefix);
        self
    }

    /// Where to record what is made. Default: a file in the system temp
    /// directory named after the cluster.
    pub fn state_file(mut self, path: &Path) -> Self {
        self.state_file = Some(path.to_owned());
        self
    }

    /// Adds an [`ExternalClient`] on the underlay (default off).
    pub fn external_client(mut self, on: bool) -> Self {
        self.external_client = on;
        self
    }

    /// Routes each node's pod CIDR via its underlay address on every other
    /// node (default on; turn off when the agent routes between nodes).
    pub fn node_routes(mut self, on: bool) -> Self {
        self.node_routes = on;
        self
    }

    /// MTU of underlay links.
    pub fn ipv6(mut self, on: bool) -> Self {
        self.ipv6 = on;
        self
    }

    /// MTU of the underlay links.
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }

    /// Makes the cluster. On error, whatever was made is removed.
    pub fn build(self) -> Result<Cluster, TopologyError> {
        if self.nodes == 0 || self.nodes > MAX_NODES {
            return Err(TopologyError::NodeCount(self.nodes));
        }
        let id = names::unique_id();
        let base = format!("{}-{id}", self.prefix);
        let (state_path, own_state_file) = match &self.state_file {
            Some(path) => (path.clone(), false),
            None => (
                std::env::temp_dir().join(format!("{base}.state.json")),
                true,
            ),
        };
        let state = Arc::new(StateFile::open_or_create(&state_path)?);
        let mut cluster = Cluster {
            id,
            prefix: self.prefix.clone(),
            state,
            own_state_file,
            nodes: Vec::new(),
            external: None,
            underlay: None,
            cgroup: None,
            link_counter: AtomicU32::new(0),
            armed: true,
        };
        // Any early return drops `cluster`, which removes what exists so far.
        let cgroup_rel = PathBuf::from(&base);
        let cgroup_abs = crate::cgroup::cgroup2_root()?.join(&cgroup_rel);
        cluster.state.record_cgroup(&cgroup_abs)?;
        cluster.cgroup = Some(Cgroup::create(&cgroup_rel)?);

        let underlay = cluster.make_netns(&format!("{base}-underlay"))?;
        let ip = Ip::netns(&underlay);
        ip.add_bridge(BRIDGE)?;
        ip.add_address(BRIDGE, underlay_ip(BRIDGE_HOST), 24)?;
        cluster.underlay = Some(underlay);

        for index in 1..=self.nodes {
            let node = cluster.make_node(&base, index, self.mtu, self.ipv6)?;
            cluster.nodes.push(node);
        }
        if self.node_routes {
            cluster.add_node_routes()?;
        }
        if self.external_client {
            let netns = cluster.make_netns(&format!("{base}-external"))?;
            let ip = underlay_ip(EXTERNAL_HOST);
            cluster.attach_to_underlay(&netns, "ext", ip, self.mtu)?;
            let ip_v6 = if self.ipv6 {
                Some(add_underlay_ip_v6(&netns, EXTERNAL_HOST)?)
            } else {
                None
            };
            cluster.external = Some(ExternalClient { netns, ip, ip_v6 });
        }
        tracing::info!(id = %cluster.id, nodes = self.nodes, state = %state_path.display(), "cluster up");
        Ok(cluster)
    }
}

impl Cluster {
    /// A builder with defaults (2 nodes, prefix `porin`).
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// The cluster's unique id (part of every namespace name).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `PREFIX-ID`, the start of every namespace and cgroup name.
    pub fn base_name(&self) -> String {
        format!("{}-{}", self.prefix, self.id)
    }

    /// The nodes, in order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node by 0-based position.
    pub fn node(&self, index: usize) -> Result<&Node, TopologyError> {
        self.nodes.get(index).ok_or(TopologyError::NoSuchNode {
            index,
            count: self.nodes.len(),
        })
    }

    /// Node by name (`node-1`, ...).
    pub fn node_by_name(&self, name: &str) -> Result<&Node, TopologyError> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| TopologyError::NoSuchNodeName(name.to_owned()))
    }

    /// The underlay namespace holding the bridge.
    pub fn underlay(&self) -> Option<&NetNs> {
        self.underlay.as_ref()
    }

    /// The external client, if the builder asked for one.
    pub fn external_client(&self) -> Option<&ExternalClient> {
        self.external.as_ref()
    }

    /// The state file recording this cluster.
    pub fn state(&self) -> &Arc<StateFile> {
        &self.state
    }

    /// The cluster's root cgroup.
    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.cgroup.as_ref()
    }

    /// Creates a pod's empty namespace (only `lo`, up) and its cgroup, a
    /// child of the node's. Its interfaces are the agent's job, or
    /// [`Cluster::plain_pod_link`]'s.
    pub fn add_pod(&self, node: usize, namespace: &str, name: &str) -> Result<Pod, TopologyError> {
        let node = self.node(node)?;
        let netns_name = format!(
            "{}-{}-{}",
            self.base_name(),
            names::sanitize(namespace),
            names::sanitize(name)
        );
        let netns = self.make_netns(&netns_name)?;
        let cg_name = format!("{}_{}", names::sanitize(namespace), names::sanitize(name));
        self.state
            .record_cgroup(&node.cgroup.path().join(&cg_name))?;
        let cgroup = node.cgroup.create_child(&cg_name)?;
        Ok(Pod {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            node: node.name.clone(),
            netns,
            cgroup,
        })
    }

    /// Connects `pod` to its node without Porin: a veth `lxcN` (node) <->
    /// `eth0` (pod), `ip/32` on the pod, a /32 route to it on the node, and
    /// a default route in the pod via the link-local gateway 169.254.1.1,
    /// answered by proxy ARP on the node side (as Calico does). Returns the
    /// node-side interface name.
    pub fn plain_pod_link(&self, pod: &Pod, ip: Ipv4Addr) -> Result<String, TopologyError> {
        let node = self.node_by_name(&pod.node)?;
        let n = self.link_counter.fetch_add(1, Ordering::Relaxed);
        let host_if = format!("lxc{}", names::base36(n));
        crate::pod::plain_link(&node.netns, &pod.netns, &host_if, ip)?;
        Ok(host_if)
    }

    /// Releases everything: namespaces, cgroups and the state file outlive
    /// this value (the sandbox CLI exits while the cluster keeps running;
    /// `sweep` removes it later). Returns the state file's path.
    pub fn persist(mut self) -> PathBuf {
        self.armed = false;
        for node in self.nodes.drain(..) {
            node.netns.keep();
            node.cgroup.keep();
        }
        if let Some(external) = self.external.take() {
            external.netns.keep();
        }
        if let Some(underlay) = self.underlay.take() {
            underlay.keep();
        }
        if let Some(cgroup) = self.cgroup.take() {
            cgroup.keep();
        }
        self.state.path().to_owned()
    }

    fn make_netns(&self, name: &str) -> Result<NetNs, TopologyError> {
        // Record first: a crash between the two leaves a harmless entry.
        self.state.record_netns(name)?;
        Ok(NetNs::create(name)?)
    }

    fn make_node(
        &self,
        base: &str,
        index: usize,
        mtu: Option<u32>,
        ipv6: bool,
    ) -> Result<Node, TopologyError> {
        let name = format!("node-{index}");
        let netns = self.make_netns(&format!("{base}-{name}"))?;
        let host = u8::try_from(index).map_err(|_| TopologyError::NodeCount(index))?;
        let underlay_ip = underlay_ip(host);
        self.attach_to_underlay(&netns, &format!("n{index}"), underlay_ip, mtu)?;
        netns.set_sysctl("net.ipv4.ip_forward", "1")?;
        let pod_cidr = Ipv4Net::new(Ipv4Addr::new(10, 200, host, 0), 24)
            .map_err(|_| TopologyError::NodeCount(index))?;
        let (underlay_ip_v6, pod_cidr_v6) = if ipv6 {
            netns.set_sysctl("net.ipv6.conf.all.forwarding", "1")?;
            let ip = add_underlay_ip_v6(&netns, host)?;
            (Some(ip), Some(pod_cidr_v6(host)))
        } else {
            (None, None)
        };
        let root = self
            .cgroup
            .as_ref()
            .ok_or(TopologyError::NodeCount(index))?;
        self.state.record_cgroup(&root.path().join(&name))?;
        let cgroup = root.create_child(&name)?;
        self.state.update(|s| {
            s.nodes.push(NodeRecord {
                name: name.clone(),
                netns: netns.name().to_owned(),
                cgroup: Some(cgroup.path().to_owned()),
                underlay_ip: Some(underlay_ip),
                pod_cidr: Some(pod_cidr),
                ..NodeRecord::default()
            });
        })?;
        Ok(Node {
            name,
            index,
            netns,
            cgroup,
            underlay_if: UNDERLAY_IF.to_owned(),
            underlay_ip,
            pod_cidr,
            underlay_ip_v6,
            pod_cidr_v6,
        })
    }

    /// veth `bridge_port` (underlay, on br0) <-> `ul0` (in `netns`) with
    /// `ip/24`, default route via the bridge. Packets for addresses outside
    /// our ranges die in the underlay namespace, which has no default route.
    fn attach_to_underlay(
        &self,
        netns: &NetNs,
        bridge_port: &str,
        ip: Ipv4Addr,
        mtu: Option<u32>,
    ) -> Result<(), TopologyError> {
        let underlay = self
            .underlay
            .as_ref()
            .ok_or_else(|| TopologyError::NoSuchNodeName("underlay".to_owned()))?;
        let under = Ip::netns(underlay);
        under.add_veth(bridge_port, UNDERLAY_IF, Some(netns.name()))?;
        under.set_master(bridge_port, BRIDGE)?;
        let inner = Ip::netns(netns);
        if let Some(mtu) = mtu {
            under.set_mtu(bridge_port, mtu)?;
            inner.set_mtu(UNDERLAY_IF, mtu)?;
        }
        under.set_up(bridge_port)?;
        inner.add_address(UNDERLAY_IF, ip, 24)?;
        inner.set_up(UNDERLAY_IF)?;
        inner.route_replace(&["default", "via", &underlay_ip(BRIDGE_HOST).to_string()])?;
        Ok(())
    }

    fn add_node_routes(&self) -> Result<(), TopologyError> {
        for node in &self.nodes {
            let ip = Ip::netns(&node.netns);
            for other in self.nodes.iter().filter(|o| o.index != node.index) {
                ip.route_replace(&[
                    &other.pod_cidr.to_string(),
                    "via",
                    &other.underlay_ip.to_string(),
                    "dev",
                    &node.underlay_if,
                ])?;
            }
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Order matters: node cgroups before the root, namespaces first.
        self.external.take();
        self.nodes.clear();
        self.underlay.take();
        self.cgroup.take();
        if self.own_state_file
            && let Err(error) = self.state.remove_file()
        {
            tracing::warn!(%error, "cannot remove cluster state file");
        }
        tracing::info!(id = %self.id, "cluster down");
    }
}

/// 192.168.200.`host`.
pub fn underlay_ip(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 200, host)
}

/// fd00:ffff::`host` (dual stack).
pub fn underlay_ip_v6(host: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0xffff, 0, 0, 0, 0, 0, u16::from(host))
}

/// Puts fd00:ffff::`host`/64 on `ul0` in `netns` (dual stack), usable at once (no DAD).
fn add_underlay_ip_v6(netns: &NetNs, host: u8) -> Result<Ipv6Addr, TopologyError> {
    let ip = underlay_ip_v6(host);
    netns.set_sysctl(&format!("net.ipv6.conf.{UNDERLAY_IF}.accept_dad"), "0")?;
    Ip::netns(netns).run(&[
        "-6",
        "addr",
        "add",
        &format!("{ip}/64"),
        "dev",
        UNDERLAY_IF,
        "nodad",
    ])?;
    Ok(ip)
}

/// fd00:10:`host`::/64, the IPv6 pod CIDR of node `host` (dual stack).
pub fn pod_cidr_v6(host: u8) -> Ipv6Net {
    Ipv6Net::new(
        Ipv6Addr::new(0xfd00, 0x10, u16::from(host), 0, 0, 0, 0, 0),
        64,
    )
    .unwrap_or_default()
}
