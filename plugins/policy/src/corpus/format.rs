//! The compatibility corpus's file format (`tests/policy-corpus/*.yaml`).
//!
//! ```yaml
//! namespaces: {prod: {env: prod}}          # namespace labels (optional)
//! endpoints:                               # shared by the file's scenarios
//!   web: {namespace: prod, labels: {app: web}, named_ports: {http: 80}}
//! scenarios:
//!   - name: l3-allow-from-label            # unique in the corpus
//!     source: docs policy/language "Ingress" # the Cilium example or test it follows
//!     enforcement: default                  # default | always | never (optional)
//!     policies: |                           # multi-document YAML, as kubectl takes it
//!       apiVersion: cilium.io/v2 ...
//!     flows:                                # SRC -> DST PORT/PROTO VERDICT
//!       - client -> web 80/TCP ALLOWED
//!       - 192.0.2.1 -> web 80/TCP DENIED    # DENIED: default deny (133)
//!       - web -> world 443/TCP DENY         # DENY: a deny rule (181)
//! ```
//!
//! A peer is an endpoint name, an entity name (`world`, `host`, `remote-node`,
//! `kube-apiserver`, `health`, `init`, `unmanaged`, `ingress`) or an IP address outside
//! the cluster.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;

use crate::Enforcement;
use crate::model::Protocol;

/// One corpus file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusFile {
    #[serde(default)]
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    pub endpoints: BTreeMap<String, EndpointSpec>,
    pub scenarios: Vec<Scenario>,
}

/// A pod of a scenario.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub named_ports: BTreeMap<String, u16>,
}

/// One scenario: policies and the expected verdict of each flow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub source: String,
    #[serde(default)]
    pub enforcement: Enforcement,
    #[serde(default)]
    pub policies: String,
    /// Endpoints added to (or replacing) the file's for this scenario.
    #[serde(default)]
    pub endpoints: BTreeMap<String, EndpointSpec>,
    pub flows: Vec<String>,
}

/// The expected outcome of a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    Allowed,
    /// Dropped by default deny (`POLICY_DENIED`, 133).
    Denied,
    /// Dropped by a deny rule (`POLICY_DENY`, 181).
    Deny,
}

/// One side of a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowPeer {
    Endpoint(String),
    Entity(String),
    Address(IpAddr),
}

/// A parsed flow line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub line: String,
    pub src: FlowPeer,
    pub dst: FlowPeer,
    pub port: (u16, Protocol),
    pub expected: Expected,
}

/// Entities a flow may name.
pub const ENTITIES: [&str; 8] = [
    "host",
    "world",
    "unmanaged",
    "health",
    "init",
    "remote-node",
    "kube-apiserver",
    "ingress",
];

fn flow_peer(s: &str) -> FlowPeer {
    if let Ok(ip) = s.parse() {
        FlowPeer::Address(ip)
    } else if ENTITIES.contains(&s) {
        FlowPeer::Entity(s.to_owned())
    } else {
        FlowPeer::Endpoint(s.to_owned())
    }
}

impl Flow {
    /// `SRC -> DST PORT/PROTO VERDICT` (`/TCP` may be left out).
    pub fn parse(line: &str) -> Result<Self, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let [src, "->", dst, port, verdict] = words.as_slice() else {
            return Err(format!(
                "flow {line:?}: expected `SRC -> DST PORT/PROTO VERDICT`"
            ));
        };
        let expected = match *verdict {
            "ALLOWED" => Expected::Allowed,
            "DENIED" => Expected::Denied,
            "DENY" => Expected::Deny,
            v => {
                return Err(format!(
                    "flow {line:?}: verdict {v:?} is not ALLOWED, DENIED or DENY"
                ));
            }
        };
        let (number, proto) = port.split_once('/').unwrap_or((port, "TCP"));
        let number = number
            .parse()
            .map_err(|_| format!("flow {line:?}: invalid port {number:?}"))?;
        let proto = Protocol::parse(proto)
            .filter(|p| matches!(p, Protocol::Tcp | Protocol::Udp | Protocol::Sctp))
            .ok_or_else(|| format!("flow {line:?}: protocol {proto:?} is not TCP, UDP or SCTP"))?;
        Ok(Self {
            line: line.to_owned(),
            src: flow_peer(src),
            dst: flow_peer(dst),
            port: (number, proto),
            expected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_lines() {
        let f = Flow::parse("client -> 10.0.0.1 53/UDP DENY").expect("valid");
        assert_eq!(f.src, FlowPeer::Endpoint("client".into()));
        assert_eq!(f.dst, FlowPeer::Address("10.0.0.1".parse().expect("ip")));
        assert_eq!(f.port, (53, Protocol::Udp));
        assert_eq!(f.expected, Expected::Deny);
        let f = Flow::parse("world -> web 80 ALLOWED").expect("valid");
        assert_eq!(f.src, FlowPeer::Entity("world".into()));
        assert_eq!(f.port, (80, Protocol::Tcp));
        assert!(Flow::parse("world -> web ALLOWED").is_err());
        assert!(Flow::parse("a -> b 80/TCP MAYBE").is_err());
        assert!(Flow::parse("a b").is_err());
    }
}
