//! The desired contents of the policy maps, computed from policies, this node's endpoints
//! and the known identities. Pure: the same inputs give the same maps, and
//! [`lookup`] decides a connection from them exactly as `bpf/lib/policy.h` does, so tests
//! can compare it with [`crate::compute::decide`].

use std::collections::{BTreeMap, BTreeSet};

use porin_core::datapath::abi::{
    Direction as DpDirection, POLICY_ALLOW, POLICY_DENY, POLICY_L7_PORT_IDENTITY, PolicyEpKey,
    PolicyKey, PolicyValue,
};

use super::engine::Engine;
use crate::Enforcement;
use crate::compute::CidrIdentities;
use crate::model::{Direction, Labels, PeerRule, Policy, PolicyRef, Port, Protocol};
use crate::proxy::ProxyPorts;

/// Port ranges (`endPort`) are expanded into one entry per port, up to this many per range;
/// a larger range makes its policy invalid for the datapath.
pub const MAX_RANGE_PORTS: u32 = 1024;

/// A local endpoint as the computation needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInput {
    pub id: u32,
    pub labels: Labels,
    /// Named container ports of the pod (`http` -> 8080), for ingress rules naming them.
    pub named_ports: BTreeMap<String, u16>,
}

/// A known identity and its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityInput {
    pub id: u32,
    pub labels: Labels,
    /// Named container ports of the pods carrying it (`http` -> {8080}), for egress rules
    /// naming them.
    pub named_ports: NamedPorts,
}

/// Port names to the port numbers pods give them.
pub type NamedPorts = BTreeMap<String, BTreeSet<u16>>;

/// The port names that have one port number wherever a pod declares them. Egress rules
/// resolve names against these, as Cilium does with its cluster-wide named-port map: a name
/// two pods give different numbers resolves to nothing.
pub fn unique_named_ports(all: &NamedPorts) -> BTreeMap<String, u16> {
    all.iter()
        .filter_map(
            |(name, ports)| match ports.iter().collect::<Vec<_>>().as_slice() {
                [port] => Some((name.clone(), **port)),
                _ => None,
            },
        )
        .collect()
}

/// Port names egress rules use that pods give different numbers (so they resolve to
/// nothing), with those numbers: the plugin reports them.
pub fn ambiguous_egress_port_names(
    policies: &[Policy],
    identities: &[IdentityInput],
) -> Vec<(String, BTreeSet<u16>)> {
    let mut all = NamedPorts::new();
    for identity in identities {
        for (name, ports) in &identity.named_ports {
            all.entry(name.clone()).or_default().extend(ports);
        }
    }
    let used: BTreeSet<&str> = policies
        .iter()
        .flat_map(|p| &p.rules)
        .flat_map(|r| {
            [
                r.section(Direction::Egress, false),
                r.section(Direction::Egress, true),
            ]
        })
        .flatten()
        .flat_map(|e| &e.to_ports)
        .flat_map(|r| &r.ports)
        .filter_map(|p| match &p.port {
            Port::Named(name) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    all.into_iter()
        .filter(|(name, ports)| ports.len() > 1 && used.contains(name.as_str()))
        .collect()
}

/// Whether an entry names a port (egress names resolve against the whole cluster).
pub fn names_ports(entry: &PeerRule) -> bool {
    entry
        .to_ports
        .iter()
        .any(|r| r.ports.iter().any(|p| matches!(p.port, Port::Named(_))))
}

/// What the policy maps should hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// Endpoint directions in default deny.
    pub default_deny: BTreeSet<PolicyEpKey>,
    pub entries: BTreeMap<PolicyKey, PolicyValue>,
}

/// The datapath's verdict on a new connection in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapVerdict {
    Allowed,
    /// Drop reason 133 (POLICY_DENIED) or 181 (POLICY_DENY).
    Dropped(u8),
}

/// Drop reason: default deny and nothing allowed.
pub const REASON_POLICY_DENIED: u8 = 133;
/// Drop reason: an explicit deny entry matched.
pub const REASON_POLICY_DENY: u8 = 181;

/// The datapath's direction number for a model direction.
pub fn dp_direction(direction: Direction) -> u8 {
    match direction {
        Direction::Ingress => DpDirection::Ingress.as_raw(),
        Direction::Egress => DpDirection::Egress.as_raw(),
    }
}

/// A short, stable id for a policy, carried in map entries: FNV-1a of its name, never 0.
pub fn policy_id(policy: &PolicyRef) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in policy.to_string().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

/// `IPPROTO_*` of a rule protocol; 0 = any.
fn proto_number(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
        Protocol::Icmp => 1,
        Protocol::Any => 0,
    }
}

/// Port ranges above [`MAX_RANGE_PORTS`] in a policy, as messages naming rule and range.
pub fn datapath_problems(policy: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    for rule in &policy.rules {
        for entry in rule.entries() {
            for pp in entry.to_ports.iter().flat_map(|p| p.ports.iter()) {
                if let Port::Range { start, end } = pp.port
                    && u32::from(end) - u32::from(start) + 1 > MAX_RANGE_PORTS
                {
                    out.push(format!(
                        "{}: {}.toPorts: port range {start}-{end} has more than {MAX_RANGE_PORTS} ports (the datapath expands ranges)",
                        policy.source, entry.path
                    ));
                }
            }
        }
    }
    out
}

/// (protocol, port, proxy port) triples an entry covers for `endpoint`; 0 = any (proxy:
/// none).
pub(super) fn port_keys(
    entry: &PeerRule,
    direction: Direction,
    endpoint: &EndpointInput,
    egress_named_ports: &BTreeMap<String, u16>,
    proxies: &ProxyPorts,
) -> Vec<(u8, u16, u16)> {
    if entry.to_ports.is_empty() {
        return vec![(0, 0, 0)];
    }
    let mut out = Vec::new();
    for rule in &entry.to_ports {
        let proxy = proxies.for_port_rule(rule);
        if rule.ports.is_empty() {
            out.push((0, 0, proxy));
        }
        for pp in &rule.ports {
            let proto = proto_number(pp.protocol);
            match &pp.port {
                Port::Any => out.push((proto, 0, proxy)),
                Port::Range { start, end } => {
                    let len = u32::from(*end).saturating_sub(u32::from(*start)) + 1;
                    if len <= MAX_RANGE_PORTS {
                        out.extend((*start..=*end).map(|p| (proto, p, proxy)));
                    }
                }
                // Named ports resolve against the destination: the endpoint itself at
                // ingress; at egress the cluster's unambiguous names.
                Port::Named(name) => {
                    let ports = match direction {
                        Direction::Ingress => &endpoint.named_ports,
                        Direction::Egress => egress_named_ports,
                    };
                    if let Some(port) = ports.get(name) {
                        out.push((proto, *port, proxy));
                    }
                }
            }
        }
    }
    out
}

/// The policy maps' contents for `endpoints` under `policies`; peers are the cluster's
/// `identities` and the local CIDR identities of the prefixes the policies reference.
pub fn desired(
    policies: &[Policy],
    enforcement: Enforcement,
    endpoints: &[EndpointInput],
    identities: &[IdentityInput],
    cidrs: &CidrIdentities,
) -> Desired {
    Engine::new(policies, enforcement, endpoints, identities, cidrs).into_desired()
}

/// Decides a new connection from the maps' contents, in the datapath's lookup order:
/// any matching deny entry, then any matching allow entry, then the default-deny flag.
pub fn lookup(
    maps: &Desired,
    endpoint_id: u32,
    direction: u8,
    identity: u32,
    proto: u8,
    dport: u16,
) -> MapVerdict {
    let mut allowed = false;
    for i in 0..8u8 {
        let key = PolicyKey {
            endpoint_id,
            identity: if i & 1 != 0 { 0 } else { identity },
            proto: if i & 2 != 0 { 0 } else { proto },
            dport: if i & 4 != 0 { 0 } else { dport },
            direction,
        };
        match maps.entries.get(&key) {
            Some(v) if v.action == POLICY_DENY => return MapVerdict::Dropped(REASON_POLICY_DENY),
            Some(_) => allowed = true,
            None => {}
        }
    }
    let ep = PolicyEpKey {
        endpoint_id,
        direction,
        pad: [0; 3],
    };
    if allowed || !maps.default_deny.contains(&ep) {
        MapVerdict::Allowed
    } else {
        MapVerdict::Dropped(REASON_POLICY_DENIED)
    }
}

/// The proxy port an allowed new connection is steered to (0: none), as
/// `bpf/lib/policy.h` picks it: the most specific allow entry that has one, else the port's
/// HTTP marker ([`POLICY_L7_PORT_IDENTITY`]) when the port has HTTP rules for some peer.
pub fn proxy_port_of(
    maps: &Desired,
    endpoint_id: u32,
    direction: u8,
    identity: u32,
    proto: u8,
    dport: u16,
) -> u16 {
    let key = |identity: u32, proto: u8, dport: u16| PolicyKey {
        endpoint_id,
        identity,
        dport,
        proto,
        direction,
    };
    let allows = (0..8u8).filter_map(|i| {
        maps.entries
            .get(&key(
                if i & 1 != 0 { 0 } else { identity },
                if i & 2 != 0 { 0 } else { proto },
                if i & 4 != 0 { 0 } else { dport },
            ))
            .filter(|v| v.action == POLICY_ALLOW)
    });
    let mut allowed = false;
    for v in allows {
        allowed = true;
        if v.proxy_port != 0 {
            return v.proxy_port;
        }
    }
    if !allowed || dport == 0 {
        return 0;
    }
    [proto, 0]
        .iter()
        .find_map(|&p| maps.entries.get(&key(POLICY_L7_PORT_IDENTITY, p, dport)))
        .filter(|v| v.action == POLICY_ALLOW)
        .map_or(0, |v| v.proxy_port)
}
