//! `porin sandbox up --plain`: the same cluster without Porin, as the baseline of
//! datapath benchmarks. Each node gets a placeholder process instead of an agent
//! and each pod a plain veth (`porin_testbed::pod::plain_link`): same namespaces,
//! same veth names, same addresses and /32 routes, node routes between pod CIDRs,
//! but no eBPF programs.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use porin_core::endpoint::links::host_ifname;
use porin_testbed::netns::NetNs;
use porin_testbed::process::Process;
use porin_testbed::sandbox::{AgentControl, AgentError, NodeSpec, PodSpec};

/// First host number handed out in a node's pod CIDR (below it: the router and
/// whatever an agent reserves).
const FIRST_HOST: u32 = 10;

/// An [`AgentControl`] with no agent.
#[derive(Debug, Default)]
pub struct PlainAgents {
    /// Pods wired so far, per node.
    counts: Mutex<HashMap<String, u32>>,
}

impl PlainAgents {
    /// The next free address of `node`'s pod CIDR.
    fn next_ip(&self, node: &NodeSpec) -> Result<Ipv4Addr, AgentError> {
        let mut counts = self.counts.lock().map_err(|_| "address counter poisoned")?;
        let count = counts.entry(node.name.clone()).or_insert(0);
        *count += 1;
        let ip = Ipv4Addr::from(u32::from(node.pod_cidr.network()) + FIRST_HOST + *count);
        if !node.pod_cidr.contains(&ip) || ip == node.pod_cidr.broadcast() {
            return Err(format!("pod CIDR {} of {} is full", node.pod_cidr, node.name).into());
        }
        Ok(ip)
    }
}

impl AgentControl for PlainAgents {
    /// A sleeping process stands in for the agent, so the node has one to record.
    fn start_agent(&self, node: &NodeSpec, _config_path: &Path) -> Result<Process, AgentError> {
        let mut cmd = Command::new("sleep");
        cmd.arg("infinity");
        Ok(Process::spawn(
            cmd,
            Some(&node.netns),
            Some(&node.cgroup),
            &node.agent_log,
        )?)
    }

    fn add_endpoint(
        &self,
        node: &NodeSpec,
        pod: &PodSpec,
        _pod_netns: &Path,
    ) -> Result<Ipv4Addr, AgentError> {
        let ip = self.next_ip(node)?;
        let node_ns = NetNs::open(&node.netns_name)?;
        let pod_ns = NetNs::open(&pod.netns_name)?;
        // The agent's interface name, so both topologies look the same to `ip link`.
        let host_if = host_ifname(&pod.namespace, &pod.name);
        porin_testbed::pod::plain_link(&node_ns, &pod_ns, &host_if, ip)?;
        Ok(ip)
    }
}
