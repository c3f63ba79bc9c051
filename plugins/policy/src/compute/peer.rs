//! The other side of a connection and what in a rule selects it.

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::model::{
    CidrRule, Direction, Entity, Labels, Peers, Port, PortRule, Protocol, Selector,
};

/// An endpoint, a reserved entity or an address outside the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    pub labels: Labels,
    /// The address of a peer outside the cluster (`--src-cidr`/`--dst-cidr`).
    pub cidr: Option<IpNet>,
}

/// The L4 part of a connection, as seen at the destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct L4 {
    /// `None`: no port given; only rules without a port restriction match.
    pub port: Option<(u16, Protocol)>,
    /// The destination's named container ports (`http` -> 8080), which ingress rules
    /// resolve port names against.
    pub named_ports: BTreeMap<String, u16>,
    /// The port names that have one number on every pod of the cluster declaring them,
    /// which egress rules resolve against (Cilium's cluster-wide named-port map: a name
    /// with two numbers resolves to none). Empty: the destination's `named_ports`.
    pub cluster_named_ports: BTreeMap<String, u16>,
}

impl Peer {
    /// A pod: it carries the pod namespace label.
    pub fn is_pod(&self) -> bool {
        self.labels.namespace().is_some()
    }

    /// Outside the cluster: `reserved:world`, or an address with no pod labels.
    pub fn is_world(&self) -> bool {
        match self.labels.reserved() {
            Some(r) => r.starts_with("world"),
            None => !self.is_pod() && self.cidr.is_some(),
        }
    }

    fn entity(&self, entity: Entity) -> bool {
        let reserved = self.labels.reserved();
        match entity {
            Entity::All => true,
            Entity::World => self.is_world(),
            Entity::Cluster => !self.is_world(),
            Entity::Host => reserved == Some("host"),
            Entity::RemoteNode => reserved == Some("remote-node"),
            Entity::KubeApiserver => reserved == Some("kube-apiserver"),
            Entity::Health => reserved == Some("health"),
            Entity::Init => reserved == Some("init"),
            Entity::Unmanaged => reserved == Some("unmanaged"),
            Entity::Ingress => reserved == Some("ingress"),
        }
    }

    /// Endpoint selectors select Cilium-managed endpoints, never the world,
    /// unless they name a `reserved:` label themselves.
    fn selected_by(&self, selector: &Selector) -> bool {
        let names_reserved = selector.requirements.iter().any(|r| r.source == "reserved");
        (!self.is_world() || names_reserved) && selector.matches(&self.labels)
    }

    /// A CIDR rule selects a CIDR identity whose prefix lies inside the rule's CIDR and
    /// inside none of its exceptions; `world` (an address no referenced prefix holds)
    /// only when the rule's CIDR is the zero-length prefix. Pods are never selected.
    fn in_cidr(&self, rule: &CidrRule) -> bool {
        if self.is_pod() {
            return false;
        }
        match self.cidr {
            Some(net) => rule.cidr.contains(&net) && !rule.except.iter().any(|e| e.contains(&net)),
            None => {
                self.is_world()
                    && rule.cidr.prefix_len() == 0
                    && !rule.except.iter().any(|e| e.prefix_len() == 0)
            }
        }
    }

    /// Whether the L3 part of a rule selects this peer.
    pub fn selected_by_peers(&self, peers: &Peers) -> bool {
        peers.wildcard
            || peers.endpoints.iter().any(|s| self.selected_by(s))
            || peers.entities.iter().any(|e| self.entity(*e))
            || peers.cidrs.iter().any(|c| self.in_cidr(c))
            || peers
                .fqdns
                .iter()
                .any(|f| self.labels.iter().any(|l| *l == super::cidr::fqdn_label(f)))
    }

    /// An FQDN selector's identity (the DNS proxy puts resolved addresses under it).
    pub fn is_fqdn(&self) -> bool {
        self.labels
            .iter()
            .any(|l| l.source == super::cidr::FQDN_LABEL_SOURCE)
    }
}

impl L4 {
    /// The connection as rules of `direction` see it: egress rules resolve port names
    /// against the cluster's names when those are given.
    pub fn seen_from(&self, direction: Direction) -> std::borrow::Cow<'_, L4> {
        if direction == Direction::Egress && !self.cluster_named_ports.is_empty() {
            std::borrow::Cow::Owned(L4 {
                port: self.port,
                named_ports: self.cluster_named_ports.clone(),
                cluster_named_ports: BTreeMap::new(),
            })
        } else {
            std::borrow::Cow::Borrowed(self)
        }
    }

    /// The first `toPorts` entry that covers this connection; `Some(None)` when the
    /// rule has no port restriction.
    pub fn matching<'r>(&self, to_ports: &'r [PortRule]) -> Option<Option<&'r PortRule>> {
        if to_ports.is_empty() {
            return Some(None);
        }
        to_ports
            .iter()
            .find(|r| {
                r.ports.is_empty() || r.ports.iter().any(|p| self.covers(&p.port, p.protocol))
            })
            .map(Some)
    }

    fn covers(&self, port: &Port, protocol: Protocol) -> bool {
        let Some((number, proto)) = self.port else {
            return *port == Port::Any && protocol == Protocol::Any;
        };
        if !protocol.covers(proto) {
            return false;
        }
        match port {
            Port::Any => true,
            Port::Range { start, end } => (*start..=*end).contains(&number),
            Port::Named(name) => self.named_ports.get(name) == Some(&number),
        }
    }
}
