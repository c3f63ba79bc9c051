//! Layer 4: ports, ranges, named ports and protocols.

use std::fmt;

use serde::Serialize;

/// A protocol in `toPorts` (Cilium's `L4Proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Any,
}

/// The port part of a port rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Port {
    /// Every port (`port` omitted or `"0"`).
    Any,
    /// `port`, up to `end` inclusive when `endPort` is set.
    Range { start: u16, end: u16 },
    /// A container port name, resolved against the destination pod.
    Named(String),
}

/// One `ports[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortProtocol {
    pub port: Port,
    pub protocol: Protocol,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            "ICMP" => Some(Self::Icmp),
            "ANY" => Some(Self::Any),
            _ => None,
        }
    }

    /// Whether a rule with this protocol covers traffic of `other` (a concrete one).
    pub fn covers(self, other: Protocol) -> bool {
        self == Protocol::Any || self == other
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
            Self::Icmp => "ICMP",
            Self::Any => "ANY",
        })
    }
}
