//! Policies and rules: one model for NetworkPolicy, CNP and CCNP.

use std::fmt;

use ipnet::IpNet;
use serde::Serialize;

use super::port::PortProtocol;
use super::selector::Selector;

/// Which resource a policy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PolicyKind {
    NetworkPolicy,
    CiliumNetworkPolicy,
    CiliumClusterwideNetworkPolicy,
}

/// Name of a policy as users see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyRef {
    pub kind: PolicyKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

/// A parsed policy: one or more rules (`spec` and each of `specs`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    pub source: PolicyRef,
    pub rules: Vec<Rule>,
}

/// Traffic direction, seen from the selected endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

/// Whether a rule puts its subjects into default deny, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DefaultDeny {
    pub ingress: bool,
    pub egress: bool,
}

/// What a rule applies to.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Subject {
    /// Endpoints (pods); already scoped to the namespace for namespaced kinds.
    Endpoints(Selector),
    /// Nodes (CCNP `nodeSelector`): host firewall, not evaluated for pods.
    Nodes(Selector),
}

/// One rule: a subject and its sections.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    /// Where it was written, e.g. `spec` or `specs[1]`.
    pub path: String,
    pub subject: Subject,
    pub ingress: Vec<PeerRule>,
    pub egress: Vec<PeerRule>,
    pub ingress_deny: Vec<PeerRule>,
    pub egress_deny: Vec<PeerRule>,
    pub default_deny: DefaultDeny,
}

/// A reserved entity (`fromEntities`/`toEntities`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Entity {
    All,
    World,
    Cluster,
    Host,
    RemoteNode,
    KubeApiserver,
    Health,
    Init,
    Unmanaged,
    Ingress,
}

/// A CIDR with exceptions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CidrRule {
    pub cidr: IpNet,
    pub except: Vec<IpNet>,
}

/// Layer 3 peers of one rule. All empty and `wildcard` false: selects nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Peers {
    /// No L3 field given: every peer (an L4-only rule, or a KNP rule without `from`/`to`).
    pub wildcard: bool,
    pub endpoints: Vec<Selector>,
    pub entities: Vec<Entity>,
    pub cidrs: Vec<CidrRule>,
    /// `toFQDNs` selectors, kept for the FQDN issue (not evaluated offline).
    pub fqdns: Vec<FqdnSelector>,
    /// `toServices`, kept as written (not evaluated offline).
    pub services: Vec<serde_json::Value>,
}

/// `matchName` or `matchPattern`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FqdnSelector {
    MatchName(String),
    MatchPattern(String),
}

/// L7 rules attached to ports: `http` is enforced by the L7 proxy (`crate::l7`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct L7Rules {
    pub http: Vec<super::HttpRule>,
    pub dns: Vec<serde_json::Value>,
}

/// One `toPorts` entry: ports and optional L7 rules.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PortRule {
    pub ports: Vec<PortProtocol>,
    pub l7: L7Rules,
}

/// One entry of `ingress`, `egress`, `ingressDeny` or `egressDeny`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerRule {
    /// Field path, e.g. `spec.egress[2]`.
    pub path: String,
    pub peers: Peers,
    /// Empty: every port and protocol.
    pub to_ports: Vec<PortRule>,
}

impl Entity {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "all" => Self::All,
            "world" | "world-ipv4" | "world-ipv6" => Self::World,
            "cluster" => Self::Cluster,
            "host" => Self::Host,
            "remote-node" => Self::RemoteNode,
            "kube-apiserver" => Self::KubeApiserver,
            "health" => Self::Health,
            "init" => Self::Init,
            "unmanaged" => Self::Unmanaged,
            "ingress" => Self::Ingress,
            _ => return None,
        })
    }
}

impl L7Rules {
    pub fn is_empty(&self) -> bool {
        self.http.is_empty() && self.dns.is_empty()
    }
}

impl Rule {
    pub fn section(&self, direction: Direction, deny: bool) -> &[PeerRule] {
        match (direction, deny) {
            (Direction::Ingress, false) => &self.ingress,
            (Direction::Ingress, true) => &self.ingress_deny,
            (Direction::Egress, false) => &self.egress,
            (Direction::Egress, true) => &self.egress_deny,
        }
    }

    /// Every entry of the four sections.
    pub fn entries(&self) -> impl Iterator<Item = &PeerRule> {
        [
            &self.ingress,
            &self.egress,
            &self.ingress_deny,
            &self.egress_deny,
        ]
        .into_iter()
        .flatten()
    }

    pub fn default_deny(&self, direction: Direction) -> bool {
        match direction {
            Direction::Ingress => self.default_deny.ingress,
            Direction::Egress => self.default_deny.egress,
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NetworkPolicy => "NetworkPolicy",
            Self::CiliumNetworkPolicy => "CiliumNetworkPolicy",
            Self::CiliumClusterwideNetworkPolicy => "CiliumClusterwideNetworkPolicy",
        })
    }
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        })
    }
}
