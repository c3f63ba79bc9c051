//! Pods: an empty network namespace and a cgroup on a node, plus the plain
//! (Porin-less) veth link used by benchmarks.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output};

use crate::cgroup::Cgroup;
use crate::link::{Ip, LinkError};
use crate::netns::{NetNs, NetNsError};
use crate::process::{Process, ProcessError};

/// The link-local gateway pods route through (answered by proxy ARP).
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// Name of the pod's interface.
pub const POD_IF: &str = "eth0";

/// A pod: its own network namespace and a cgroup under its node's. Both
/// are removed on drop.
#[derive(Debug)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    /// Name of the node (`node-1`, ...).
    pub node: String,
    pub netns: NetNs,
    pub cgroup: Cgroup,
}

impl Pod {
    /// Starts a long-running command in the pod's namespace and cgroup,
    /// logging to `log`.
    pub fn spawn(&self, cmd: Command, log: &Path) -> Result<Process, ProcessError> {
        Process::spawn(cmd, Some(self.netns.path()), Some(self.cgroup.path()), log)
    }

    /// Runs a command to completion in the pod's namespace and cgroup; a
    /// non-zero exit is an error carrying stderr.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<Output, NetNsError> {
        let mut cmd = Command::new(program);
        cmd.args(args);
        crate::placement::place(&mut cmd, Some(self.netns.path()), Some(self.cgroup.path()))?;
        crate::cmd::run(&mut cmd).map_err(|source| NetNsError::Command {
            name: self.netns.name().to_owned(),
            source,
        })
    }

    /// `ns/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Connects `pod_ns` to `node_ns` the way a simple CNI plugin would:
/// veth `host_if` (node) <-> `eth0` (pod), `ip/32` on the pod, default
/// route in the pod via 169.254.1.1 (proxy ARP on `host_if`, no proxy
/// delay), `ip/32 dev host_if` on the node.
pub fn plain_link(
    node_ns: &NetNs,
    pod_ns: &NetNs,
    host_if: &str,
    ip: Ipv4Addr,
) -> Result<(), PlainLinkError> {
    let node = Ip::netns(node_ns);
    let pod = Ip::netns(pod_ns);
    node.add_veth(host_if, POD_IF, Some(pod_ns.name()))?;
    node_ns.set_sysctl(&format!("net.ipv4.conf.{host_if}.proxy_arp"), "1")?;
    node_ns.set_sysctl(&format!("net.ipv4.neigh.{host_if}.proxy_delay"), "0")?;
    node.set_up(host_if)?;
    pod.add_address(POD_IF, ip, 32)?;
    pod.set_up(POD_IF)?;
    let gw = POD_GATEWAY.to_string();
    pod.route_replace(&[&gw, "dev", POD_IF, "scope", "link"])?;
    pod.route_replace(&["default", "via", &gw, "dev", POD_IF])?;
    node.route_replace(&[&format!("{ip}/32"), "dev", host_if, "scope", "link"])?;
    tracing::debug!(node = node_ns.name(), pod = pod_ns.name(), %ip, host_if, "plain pod link");
    Ok(())
}

/// Errors from [`plain_link`].
#[derive(Debug, thiserror::Error)]
pub enum PlainLinkError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    NetNs(#[from] NetNsError),
}
