//! `cilium.io/v2` CiliumNode: one per node, written only by that node's agent.
//!
//! Field names are Cilium's, so `kubectl get ciliumnode -o wide` and tools that
//! read Cilium's CiliumNodes see the same shape: `spec.addresses`,
//! `spec.health`, `spec.encryption.key`, `spec.ipam.podCIDRs`. Like Cilium,
//! the WireGuard public key rides in an annotation (Porin's
//! `network.porin.io/wg-pub-key`, the same one the agent puts on its Node).
//! `status.agent` is Porin's own: the agent's health as it last saw it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::Ipv4Net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `cilium.io/v2` CiliumNode (cluster scoped, named like its Node).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct CiliumNode {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<CiliumNodeSpec>,
    #[serde(default)]
    pub status: Option<CiliumNodeStatus>,
}

/// What the node's agent announces about the node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CiliumNodeSpec {
    /// Addresses of the node: `InternalIP` (the underlay address) and
    /// `CiliumInternalIP` (the node's address inside the pod CIDR).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
    /// Addresses other nodes probe for health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthAddressing>,
    /// Transparent encryption of this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<NodeEncryption>,
    /// Pod address management of this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<NodeIpam>,
}

/// One address of a node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeAddress {
    /// `InternalIP`, `ExternalIP` or `CiliumInternalIP`.
    #[serde(rename = "type")]
    pub kind: String,
    pub ip: String,
}

/// Health-check addresses of a node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HealthAddressing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
}

/// Encryption settings of a node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeEncryption {
    /// IPsec key index in use (Cilium's field); 0 with WireGuard, whose
    /// public key is in the `network.porin.io/wg-pub-key` annotation.
    #[serde(default)]
    pub key: i64,
}

/// Pod CIDRs of a node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeIpam {
    #[serde(rename = "podCIDRs", default, skip_serializing_if = "Vec::is_empty")]
    pub pod_cidrs: Vec<String>,
}

/// What the node's agent reports about itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CiliumNodeStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentHealth>,
}

/// The agent's health as `porin status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentHealth {
    /// `Ok`, `Degraded` or `Failure`.
    pub state: String,
    /// Why the state is not `Ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// RFC 3339 time of the last report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
}

impl CiliumNode {
    /// The CiliumNode an agent publishes for its node: its underlay address,
    /// its pod CIDR, and the annotations plugins contribute (the WireGuard key).
    pub fn for_agent(
        name: &str,
        pod_cidr: Ipv4Net,
        node_ip: IpAddr,
        annotations: BTreeMap<String, String>,
    ) -> Self {
        CiliumNode {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                annotations: (!annotations.is_empty()).then_some(annotations),
                ..ObjectMeta::default()
            },
            spec: Some(CiliumNodeSpec {
                addresses: vec![NodeAddress {
                    kind: "InternalIP".to_owned(),
                    ip: node_ip.to_string(),
                }],
                health: None,
                encryption: Some(NodeEncryption { key: 0 }),
                ipam: Some(NodeIpam {
                    pod_cidrs: vec![pod_cidr.to_string()],
                }),
            }),
            status: None,
        }
    }
}
