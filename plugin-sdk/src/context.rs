//! What core offers a running plugin.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::{ClusterState, DatapathEvent, L7Record};

/// What a plugin may know about an endpoint (a pod on this or another node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointMeta {
    /// Endpoint id on its node (0 for endpoints of other nodes).
    pub id: u32,
    pub namespace: String,
    pub pod_name: String,
    pub identity: u32,
    /// Security-relevant labels in Cilium's `source:key=value` form.
    pub labels: Vec<String>,
    pub node_name: String,
    /// The workload owning the pod, e.g. ("Deployment", "payments-api"), if known.
    pub workload: Option<(String, String)>,
}

/// A local CIDR identity a policy plugin wants in the ipcache: every address of
/// `addr/prefix_len` that no more specific entry (a pod, a node, a longer prefix) claims
/// carries `identity` (Cilium's local CIDR identities, scope `1 << 24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CidrIdentity {
    pub addr: IpAddr,
    pub prefix_len: u8,
    pub identity: u32,
}

/// Writing CIDR identities into the ipcache failed; the message names the prefix and map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ipcache: {0}")]
pub struct IpcacheWriteError(pub String);

/// Core's services for plugins. Implemented by core; plugins never hold the
/// loaded eBPF object themselves.
pub trait PluginContext: Send + Sync {
    /// This agent's node.
    fn node_name(&self) -> &str;

    /// Directory where the plugin may keep state across restarts.
    fn state_dir(&self) -> PathBuf;

    /// Directory for sockets the plugin serves (e.g. the Hubble socket).
    fn run_dir(&self) -> PathBuf;

    /// Pin path of a datapath map, to open a typed handle on it.
    fn map_pin_path(&self, map: &str) -> PathBuf;

    /// Datapath events as they are read from the ring buffer.
    fn subscribe_events(&self) -> broadcast::Receiver<Arc<DatapathEvent>>;

    /// The endpoint that owns `ip`, on any node, from the state store.
    fn resolve_endpoint(&self, ip: IpAddr) -> Option<EndpointMeta>;

    /// The labels behind a numeric identity.
    fn identity_labels(&self, identity: u32) -> Option<Vec<String>>;

    /// The cluster state now (Services, EndpointSlices, Pods, pod addresses), read-only.
    fn state(&self) -> Arc<dyn ClusterState>;

    /// Datapath events the kernel could not write because the ring buffer was full
    /// (the metrics map's `REASON_EVENT_LOST` packets, summed over CPUs and
    /// directions), as core last read them. An absolute total: it only grows, or
    /// restarts from zero when the map is recreated. Contexts without a datapath
    /// report 0.
    fn datapath_events_lost(&self) -> u64 {
        0
    }

    /// Replaces the CIDR identities this node's ipcache holds for policy with `prefixes`
    /// (entries of pods and nodes always take precedence on the same prefix) and writes
    /// the differences to the datapath. Contexts without a datapath accept and ignore them.
    fn set_cidr_identities(&self, prefixes: &[CidrIdentity]) -> Result<(), IpcacheWriteError> {
        let _ = prefixes;
        Ok(())
    }
    /// This node's IP (`[agent] node_ip`), where node proxies listen; `None` if unset.
    fn node_ip(&self) -> Option<IpAddr> {
        None
    }

    /// Whether every policy object in the cluster state parsed (all of them, each time the
    /// plugin loads them). Core writes each outcome as the object's `Valid` status
    /// condition where the datastore has statuses (Kubernetes), only when it changed.
    fn report_policy_validity(&self, _all: &[crate::PolicyValidity]) {}

    /// Adds or refreshes addresses learned from DNS answers: each `addr` (prefix_len 32 or
    /// 128) gets `identity` in the ipcache, unless a pod or node holds it; written to the
    /// datapath before this returns. Contexts without a datapath ignore them.
    fn upsert_fqdn_addresses(&self, entries: &[CidrIdentity]) -> Result<(), IpcacheWriteError> {
        let _ = entries;
        Ok(())
    }

    /// Removes addresses learned from DNS answers (expired, or over a cap).
    fn remove_fqdn_addresses(&self, addrs: &[IpAddr]) -> Result<(), IpcacheWriteError> {
        let _ = addrs;
        Ok(())
    }

    /// Reports how full a map this plugin writes is, as a ratio of its `max_entries`
    /// (`cilium_bpf_map_pressure{map_name}` on the agent metrics). Contexts without
    /// metrics ignore it.
    fn set_map_pressure(&self, _map: &str, _ratio: f64) {}

    /// Hands an L7 record (the policy plugin's HTTP proxy) to the flow pipeline.
    /// Contexts without a pipeline ignore it.
    fn publish_l7(&self, _record: L7Record) {}

    /// Attaches the node device program's tunnel entry (`porin_from_tunnel`, NodePort
    /// replies that come back through the tunnel) to `ifname`, e.g. after the plugin made
    /// or remade its WireGuard device. Contexts without a datapath ignore it.
    fn attach_tunnel_program(&self, ifname: &str) -> Result<(), String> {
        let _ = ifname;
        Ok(())
    }

    /// Whether anything reads the L7 records (the observe plugin's pipeline): without a
    /// reader a proxy may skip building them. Yes unless the context knows better (the
    /// agent's says no while the observe plugin is off).
    fn l7_wanted(&self) -> bool {
        true
    }

    /// L7 records as the proxy publishes them; `None` in contexts without them.
    fn subscribe_l7(&self) -> Option<broadcast::Receiver<Arc<L7Record>>> {
        None
    }

    /// Replaces the table naming the policy ids of the policy maps (the policy plugin,
    /// when the policies in force changed). Contexts without flows ignore it.
    fn publish_policies(&self, _table: Arc<crate::PolicyTable>) {}

    /// The policy a policy id stands for, from the table last published; `None` when
    /// unknown (the observe plugin keeps ids of deleted policies for a while itself).
    fn policy(&self, _id: u32) -> Option<crate::PolicyInfo> {
        None
    }
}
