//! JSON bodies of the agent API.

use std::net::{Ipv4Addr, Ipv6Addr};

use porin_plugin_sdk::Health;
use serde::{Deserialize, Serialize};

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusResponse {
    pub node: String,
    pub version: String,
    /// True once the datastore synced, the datapath loaded and endpoints were restored.
    pub ready: bool,
    pub uptime_seconds: u64,
    pub datastore: DatastoreStatus,
    pub datapath: DatapathStatus,
    pub plugins: Vec<PluginStatus>,
    pub endpoints: usize,
    pub identities: usize,
    /// Endpoints of the whole cluster this agent can resolve (its own and other nodes').
    #[serde(default)]
    pub cluster_endpoints: usize,
}

/// The datastore part of the status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatastoreStatus {
    pub kind: String,
    pub synced: bool,
    /// Current problems with the input (broken manifests...), each naming its input.
    pub errors: Vec<String>,
}

/// The datapath part of the status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatapathStatus {
    pub loaded: bool,
    pub pin_dir: String,
    /// Interfaces with Porin's programs attached.
    pub attached_interfaces: usize,
    pub error: Option<String>,
}

/// One plugin in `GET /v1/plugins` and in the status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginStatus {
    pub name: String,
    pub enabled: bool,
    pub health: Health,
}

/// One pinned map in `GET /v1/maps` (`porin map list`): its entries counted when asked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MapInfo {
    pub name: String,
    /// The plugin whose feature uses the map, or `core`.
    pub owner: String,
    pub entries: u32,
    pub max_entries: u32,
    /// entries / max_entries, as `cilium_bpf_map_pressure` reports it.
    pub pressure: f64,
    /// Why the map could not be counted (then `entries` is 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer to `POST /v1/plugins/<name>/enable|disable` (`porin plugins enable|disable`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginToggle {
    pub plugin: String,
    pub enabled: bool,
    /// False when the plugin already was in the asked state.
    pub changed: bool,
    /// Whether the programs were reloaded with new load-time switches.
    pub datapath_reloaded: bool,
    /// From the request to the change being in effect, in milliseconds.
    pub elapsed_ms: f64,
    /// Of which reloading and swapping the programs.
    #[serde(default)]
    pub datapath_ms: f64,
}

/// The lifecycle states of an endpoint, as Cilium names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointState {
    WaitingForIdentity,
    Regenerating,
    Ready,
    Disconnecting,
}

impl EndpointState {
    /// All states, for gauges that must show zeros too.
    pub const ALL: [EndpointState; 4] = [
        Self::WaitingForIdentity,
        Self::Regenerating,
        Self::Ready,
        Self::Disconnecting,
    ];

    /// The label value Cilium uses in `cilium_endpoint_state{endpoint_state=...}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WaitingForIdentity => "waiting-for-identity",
            Self::Regenerating => "regenerating",
            Self::Ready => "ready",
            Self::Disconnecting => "disconnecting",
        }
    }
}

/// One endpoint (a pod on this node) in `GET /v1/endpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    pub id: u32,
    pub namespace: String,
    pub pod: String,
    pub ipv4: Ipv4Addr,
    /// The pod's IPv6 address (dual stack, `[agent] enable_ipv6`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    /// The node-side end of the pod's veth, where the programs are attached.
    pub host_ifname: String,
    pub ifindex: u32,
    pub identity: u32,
    pub labels: Vec<String>,
    pub state: EndpointState,
    /// The pod's network namespace.
    pub netns: String,
    /// The container runtime's id of the pod sandbox, when a CNI plugin made the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

/// `POST /v1/endpoints`: what a CNI ADD asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddEndpointRequest {
    pub namespace: String,
    pub pod: String,
    /// Path of the pod's network namespace, e.g. /run/netns/NAME.
    pub netns: String,
    /// Interface name inside the pod.
    #[serde(default = "default_pod_ifname")]
    pub ifname: String,
    /// The container runtime's id of the pod sandbox (CNI_CONTAINERID), recorded so a
    /// later DEL or GC of another sandbox of the same pod leaves this one alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

/// Query of `DELETE /v1/endpoints/{namespace}/{pod}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeleteEndpointQuery {
    /// Delete only when the endpoint belongs to this container (CNI DEL of an old
    /// sandbox must not remove the pod's new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

fn default_pod_ifname() -> String {
    "eth0".to_string()
}

/// One identity in `GET /v1/identities`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityInfo {
    pub id: u32,
    pub labels: Vec<String>,
    pub reserved: bool,
}

/// Body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
