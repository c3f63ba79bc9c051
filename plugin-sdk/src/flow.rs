//! Datapath events as plugins see them: decoded, typed, and owned.
//!
//! Core reads the ring buffer, decodes each record (see `bpf/lib/common.h`) into a
//! [`DatapathEvent`] and broadcasts it to plugins. The observe plugin enriches
//! events into flows with endpoint metadata.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What made the datapath emit the event (Cilium's monitor aggregation: never
/// one event per packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A conntrack entry was created: a new connection or flow.
    NewFlow,
    /// A TCP flag (SYN, FIN, RST) was seen for the first time in one direction.
    TcpFlags,
    /// A packet was dropped.
    Drop,
    /// A new connection was allowed by a policy entry, or audited (Cilium's policy verdict
    /// notification, Hubble event type 5). `policy_id` names the entry.
    PolicyVerdict,
}

/// The datapath's verdict on the packet that caused the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    Forwarded,
    Dropped,
    /// Policy audit mode: a connection the policy refuses, forwarded and reported.
    Audit,
}

/// Where the packet was observed, relative to the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Entering the pod (Hubble's `to-endpoint`, traffic direction INGRESS).
    ToEndpoint,
    /// Leaving the pod (Hubble's `from-endpoint` / `to-stack`, direction EGRESS).
    FromEndpoint,
}

/// One decoded datapath event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatapathEvent {
    /// Kernel monotonic time of the packet, in nanoseconds.
    pub ktime_ns: u64,
    pub kind: EventKind,
    pub verdict: Verdict,
    /// Cilium's drop reason code (0 when forwarded).
    pub drop_reason: u8,
    pub direction: Direction,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
    pub protocol: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub ifindex: u32,
    pub src_identity: u32,
    pub dst_identity: u32,
    /// Endpoint id of the pod the program is attached to.
    pub endpoint_id: u32,
    pub is_reply: bool,
    /// The packet crossed the WireGuard tunnel between nodes (Hubble's `IP.encrypted`).
    #[serde(default)]
    pub encrypted: bool,
    pub packet_len: u32,
    /// The policy map entry that decided the connection (its `policy_id`): set on policy
    /// verdicts and audits, and on drops by a deny entry (reason 181); 0 otherwise. The
    /// policy plugin publishes which policy an id stands for ([`crate::PolicyTable`]).
    #[serde(default)]
    pub policy_id: u32,
    /// Which part of the entry matched, Cilium's `PolicyMatchType` (0 none, 1 L3-Only,
    /// 2 L3-L4, 3 L4-Only, 4 all, 5 L3-Proto, 6 Proto-Only).
    #[serde(default)]
    pub policy_match: u8,
}
