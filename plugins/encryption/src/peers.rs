//! Which nodes are WireGuard peers, from the Node objects they publish.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;

/// Node annotation holding a node's WireGuard public key (as Cilium's
/// `network.cilium.io/wg-pub-key`).
pub const PUB_KEY_ANNOTATION: &str = "network.porin.io/wg-pub-key";
/// Node annotation holding a node's WireGuard endpoint, `node IP:listen port`.
pub const ENDPOINT_ANNOTATION: &str = "network.porin.io/wg-endpoint";

/// Another node reached through the tunnel.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub node: String,
    pub public_key: String,
    pub endpoint: SocketAddr,
    /// Its pod CIDR: what the peer may send us and what we route to it.
    pub pod_cidr: Ipv4Net,
    /// Its node address (InternalIP, else the endpoint's address), also in its allowed
    /// IPs but never routed to the device: a NodePort packet the peer SNATed to its node
    /// address and sent into the tunnel for one of our pods (bpf/lib/nodeport.h).
    pub node_ip: Option<Ipv4Addr>,
}

impl Peer {
    /// What the peer may send us through the tunnel: its pod CIDR and its node address.
    pub fn allowed_ips(&self) -> Vec<Ipv4Net> {
        let mut out = vec![self.pod_cidr];
        out.extend(self.node_ip.map(Ipv4Net::from));
        out
    }
}

/// This node's own entry, to find its pod CIDR (the device's address comes from it).
pub fn own_pod_cidr(nodes: &[Node], self_name: &str) -> Option<Ipv4Net> {
    nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(self_name))
        .and_then(pod_cidr)
}

/// Every other node that published a valid key and a pod CIDR, ordered by node name.
/// The endpoint is the published one, else the node's InternalIP with `default_port`.
/// Nodes without a key (encryption off there) are not peers: core keeps their plain route.
pub fn wanted_peers(nodes: &[Node], self_name: &str, default_port: u16) -> Vec<Peer> {
    let mut peers: Vec<Peer> = nodes
        .iter()
        .filter_map(|node| {
            let name = node.metadata.name.as_deref()?;
            if name == self_name {
                return None;
            }
            let annotations = node.metadata.annotations.as_ref()?;
            let public_key = annotations.get(PUB_KEY_ANNOTATION)?.trim();
            if !crate::keys::is_key(public_key) {
                return None;
            }
            let endpoint = annotations
                .get(ENDPOINT_ANNOTATION)
                .and_then(|e| e.parse::<SocketAddr>().ok())
                .or_else(|| internal_ip(node).map(|ip| SocketAddr::new(ip, default_port)))?;
            let node_ip = match internal_ip(node) {
                Some(IpAddr::V4(ip)) => Some(ip),
                _ => match endpoint.ip() {
                    IpAddr::V4(ip) => Some(ip),
                    IpAddr::V6(_) => None,
                },
            };
            Some(Peer {
                node: name.to_string(),
                public_key: public_key.to_string(),
                endpoint,
                pod_cidr: pod_cidr(node)?,
                node_ip,
            })
        })
        .collect();
    peers.sort();
    peers
}

/// What to change to go from `applied` to `wanted`: peers to remove (by key, with the
/// pod CIDR whose route goes too) and peers to set (new ones and changed ones).
pub fn diff<'a>(applied: &'a [Peer], wanted: &'a [Peer]) -> (Vec<&'a Peer>, Vec<&'a Peer>) {
    let removed = applied
        .iter()
        .filter(|a| {
            !wanted
                .iter()
                .any(|w| w.public_key == a.public_key && w.pod_cidr == a.pod_cidr)
        })
        .collect();
    // The node name is only a label (adopted peers have none): re-setting an unchanged
    // peer would be a needless write.
    let same = |a: &Peer, w: &Peer| {
        (&a.public_key, a.endpoint, a.pod_cidr, a.node_ip)
            == (&w.public_key, w.endpoint, w.pod_cidr, w.node_ip)
    };
    let set = wanted
        .iter()
        .filter(|w| !applied.iter().any(|a| same(a, w)))
        .collect();
    (removed, set)
}

/// The pod CIDR of every other node, key or not: what strict mode guards.
pub fn remote_pod_cidrs(nodes: &[Node], self_name: &str) -> Vec<Ipv4Net> {
    let mut out: Vec<Ipv4Net> = nodes
        .iter()
        .filter(|n| n.metadata.name.as_deref() != Some(self_name))
        .filter_map(pod_cidr)
        .collect();
    out.sort();
    out.dedup();
    out
}

fn pod_cidr(node: &Node) -> Option<Ipv4Net> {
    node.spec
        .as_ref()?
        .pod_cidr
        .as_deref()?
        .parse::<Ipv4Net>()
        .ok()
}

fn internal_ip(node: &Node) -> Option<IpAddr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")?
        .address
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn key(c: char) -> String {
        format!("{}=", c.to_string().repeat(43))
    }

    fn node(name: &str, cidr: &str, ip: &str, annotations: &[(&str, &str)]) -> Node {
        let annotations: BTreeMap<String, String> = annotations
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        Node {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                annotations: (!annotations.is_empty()).then_some(annotations),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: Some(cidr.to_string()),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".to_string(),
                    address: ip.to_string(),
                }]),
                ..NodeStatus::default()
            }),
        }
    }

    #[test]
    fn peers_are_other_nodes_with_a_valid_key() {
        let (a, b, c) = (key('a'), key('b'), key('c'));
        let nodes = vec![
            node(
                "node-1",
                "10.200.1.0/24",
                "192.168.200.1",
                &[(PUB_KEY_ANNOTATION, &a)],
            ),
            node(
                "node-2",
                "10.200.2.0/24",
                "192.168.200.2",
                &[
                    (PUB_KEY_ANNOTATION, &b),
                    (ENDPOINT_ANNOTATION, "192.168.200.2:5000"),
                ],
            ),
            // No endpoint annotation: InternalIP and the default port.
            node(
                "node-3",
                "10.200.3.0/24",
                "192.168.200.3",
                &[(PUB_KEY_ANNOTATION, &c)],
            ),
            // Encryption off there: no key, not a peer.
            node("node-4", "10.200.4.0/24", "192.168.200.4", &[]),
            node(
                "node-5",
                "10.200.5.0/24",
                "192.168.200.5",
                &[(PUB_KEY_ANNOTATION, "junk")],
            ),
        ];
        let remote: Vec<String> = remote_pod_cidrs(&nodes, "node-1")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            remote,
            [
                "10.200.2.0/24",
                "10.200.3.0/24",
                "10.200.4.0/24",
                "10.200.5.0/24"
            ],
            "strict mode guards every other node, with or without a key"
        );
        let peers = wanted_peers(&nodes, "node-1", 51871);
        let summary: Vec<(&str, String, Vec<String>)> = peers
            .iter()
            .map(|p| {
                (
                    p.node.as_str(),
                    p.endpoint.to_string(),
                    p.allowed_ips().iter().map(ToString::to_string).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "node-2",
                    "192.168.200.2:5000".into(),
                    vec!["10.200.2.0/24".into(), "192.168.200.2/32".into()]
                ),
                (
                    "node-3",
                    "192.168.200.3:51871".into(),
                    vec!["10.200.3.0/24".into(), "192.168.200.3/32".into()]
                ),
            ],
            "allowed IPs: the pod CIDR and the node address (NodePort SNAT)"
        );
        assert_eq!(peers[0].public_key, b);
        assert_eq!(
            own_pod_cidr(&nodes, "node-1").map(|c| c.to_string()),
            Some("10.200.1.0/24".to_string())
        );
    }

    #[test]
    fn diff_removes_gone_and_rotated_keys_and_sets_new_ones() {
        let peer = |n: &str, k: char, cidr: &str| Peer {
            node: n.to_string(),
            public_key: key(k),
            endpoint: "192.168.200.9:51871".parse().expect("addr"),
            pod_cidr: cidr.parse().expect("cidr"),
            node_ip: Some("192.168.200.9".parse().expect("ip")),
        };
        let applied = vec![
            peer("node-2", 'b', "10.200.2.0/24"),
            peer("node-3", 'c', "10.200.3.0/24"),
        ];
        // node-2 rotated its key, node-3 left, node-4 joined.
        let wanted = vec![
            peer("node-2", 'B', "10.200.2.0/24"),
            peer("node-4", 'd', "10.200.4.0/24"),
        ];
        let (removed, set) = diff(&applied, &wanted);
        let removed: Vec<&str> = removed.iter().map(|p| p.node.as_str()).collect();
        let set: Vec<&str> = set.iter().map(|p| p.node.as_str()).collect();
        assert_eq!(removed, vec!["node-2", "node-3"]);
        assert_eq!(set, vec!["node-2", "node-4"]);
        let (removed, set) = diff(&wanted, &wanted);
        assert!(
            removed.is_empty() && set.is_empty(),
            "nothing to do when in sync"
        );
        // A peer adopted from a device set up without the node address is set again.
        let mut adopted = wanted.clone();
        adopted[0].node_ip = None;
        let (removed, set) = diff(&adopted, &wanted);
        assert!(removed.is_empty());
        assert_eq!(set.len(), 1);
        assert_eq!(set[0].node, "node-2");
    }
}
