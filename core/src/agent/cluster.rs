//! What the agent derives from the cluster state: pods' security labels, the
//! endpoints of other nodes, and routes to other nodes' pod CIDRs.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use k8s_openapi::api::core::v1::Pod;
use porin_plugin_sdk::EndpointMeta;

use crate::identity::{Labels, PodLabelsInput, security_labels};
use crate::state::Snapshot;

/// The cluster name used in identity labels.
pub const CLUSTER_NAME: &str = "default";

/// Security labels of a pod, or `None` while the pod is not in the store.
pub fn pod_security_labels(snapshot: &Snapshot, namespace: &str, name: &str) -> Option<Labels> {
    let pod = snapshot.pod(namespace, name)?;
    let empty = BTreeMap::new();
    let pod_labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let namespace_labels = snapshot
        .namespace(namespace)
        .and_then(|n| n.metadata.labels.as_ref())
        .unwrap_or(&empty);
    let service_account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref());
    Some(security_labels(&PodLabelsInput {
        namespace,
        pod_labels,
        namespace_labels,
        service_account,
        cluster: CLUSTER_NAME,
    }))
}

/// The workload that owns a pod, as Hubble names it: a ReplicaSet's pods belong
/// to its Deployment.
pub fn workload_of(pod: &Pod) -> Option<(String, String)> {
    let owner = pod.metadata.owner_references.as_ref()?.first()?;
    if owner.kind == "ReplicaSet"
        && let Some((deployment, _hash)) = owner.name.rsplit_once('-')
    {
        return Some(("Deployment".to_string(), deployment.to_string()));
    }
    Some((owner.kind.clone(), owner.name.clone()))
}

/// An endpoint published by another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEndpoint {
    pub ip: IpAddr,
    pub meta: EndpointMeta,
}

/// Endpoints other nodes published (CiliumEndpoints), except addresses in `local`.
pub fn remote_endpoints(
    snapshot: &Snapshot,
    is_local: impl Fn(IpAddr) -> bool,
) -> Vec<RemoteEndpoint> {
    let mut out = Vec::new();
    for cep in snapshot.cilium_endpoints() {
        let Some(status) = &cep.status else { continue };
        let Some(identity) = &status.identity else {
            continue;
        };
        let Some(networking) = &status.networking else {
            continue;
        };
        let namespace = cep.metadata.namespace.clone().unwrap_or_default();
        let pod_name = cep.metadata.name.clone().unwrap_or_default();
        let workload = snapshot.pod(&namespace, &pod_name).and_then(workload_of);
        let addresses = networking.addressing.iter().flat_map(|pair| {
            [pair.ipv4.as_deref(), pair.ipv6.as_deref()]
                .into_iter()
                .flatten()
                .filter_map(|s| s.parse::<IpAddr>().ok())
        });
        for ip in addresses {
            if is_local(ip) {
                continue;
            }
            out.push(RemoteEndpoint {
                ip,
                meta: EndpointMeta {
                    id: 0,
                    namespace: namespace.clone(),
                    pod_name: pod_name.clone(),
                    identity: u32::try_from(identity.id).unwrap_or(0),
                    labels: identity.labels.clone(),
                    node_name: cep
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(NODE_LABEL).cloned())
                        .unwrap_or_default(),
                    workload: workload.clone(),
                },
            });
        }
    }
    out
}

/// Label on published CiliumEndpoints naming the node that hosts them.
pub const NODE_LABEL: &str = "porin.io/node";

/// Another node: its pod CIDR is reached through its address (of the same family).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeRoute {
    pub node: String,
    pub pod_cidr: IpNet,
    pub via: IpAddr,
}

/// Routes to every other node that published a pod CIDR and an internal address;
/// with `ipv6` (dual stack) also to the IPv6 pod CIDR in `spec.podCIDRs` through the
/// node's IPv6 InternalIP.
pub fn node_routes(snapshot: &Snapshot, self_name: &str, ipv6: bool) -> Vec<NodeRoute> {
    let mut routes = Vec::new();
    for node in snapshot.nodes() {
        let Some(name) = node.metadata.name.as_deref() else {
            continue;
        };
        if name == self_name {
            continue;
        }
        let Some(cidr) = node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .and_then(|c| c.parse::<Ipv4Net>().ok())
        else {
            continue;
        };
        let internal: Vec<IpAddr> = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse::<IpAddr>().ok())
            .collect();
        if let Some(&via) = internal.iter().find(|ip| ip.is_ipv4()).or(internal.first()) {
            routes.push(NodeRoute {
                node: name.to_string(),
                pod_cidr: IpNet::V4(cidr),
                via,
            });
        }
        if !ipv6 {
            continue;
        }
        let cidr_v6 = node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidrs.as_ref())
            .into_iter()
            .flatten()
            .find_map(|c| c.parse::<Ipv6Net>().ok());
        let via_v6 = internal.iter().find(|ip| ip.is_ipv6());
        if let (Some(cidr), Some(&via)) = (cidr_v6, via_v6) {
            routes.push(NodeRoute {
                node: name.to_string(),
                pod_cidr: IpNet::V6(cidr),
                via,
            });
        }
    }
    routes.sort();
    routes
}

/// The agent's view for flow enrichment: who owns an address, what an identity means.
#[derive(Debug, Default, Clone)]
pub struct ClusterView {
    pub by_ip: HashMap<IpAddr, EndpointMeta>,
    pub identity_labels: HashMap<u32, Vec<String>>,
}
