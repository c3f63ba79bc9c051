//! Rust mirrors of the structs in `bpf/lib/common.h`, and decoding of ring buffer records.
//!
//! `common.h` is the single source of truth. The unit tests at the bottom compare every size
//! and offset below with the values a C compiler computed for that header at build time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use thiserror::Error;

/// Family values used in keys and events (`PORIN_FAMILY_*`).
pub const FAMILY_IPV4: u8 = 4;
/// IPv6 family value.
pub const FAMILY_IPV6: u8 = 6;
/// Reserved identity of addresses outside the cluster.
pub const IDENTITY_WORLD: u32 = 2;
/// Metrics reason of forwarded packets.
pub const REASON_FORWARDED: u8 = 0;
/// Metrics reason counting events lost because the ring buffer was full.
pub const REASON_EVENT_LOST: u8 = 1;
/// Flow event flag: the packet crossed the WireGuard tunnel (`PORIN_EVENT_F_ENCRYPTED`).
pub const EVENT_FLAG_ENCRYPTED: u8 = 0x01;

/// `struct porin_ct_key`. Ports are in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub family: u8,
    pub l4_proto: u8,
    pub pad: [u8; 2],
}

/// `struct porin_ct_entry`. Index 0 is the original direction, 1 the reply.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    pub created_ns: u64,
    pub last_seen_ns: u64,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub tcp_flags_seen: [u32; 2],
}

/// `struct porin_flow_event`, as written into the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawFlowEvent {
    pub ktime_ns: u64,
    pub r#type: u8,
    pub verdict: u8,
    pub drop_reason: u8,
    pub direction: u8,
    pub family: u8,
    pub l4_proto: u8,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub is_reply: u8,
    /// `PORIN_EVENT_F_*`.
    pub flags: u8,
    pub pad: u8,
    pub sport: u16,
    pub dport: u16,
    pub ifindex: u32,
    pub src_identity: u32,
    pub dst_identity: u32,
    pub endpoint_id: u32,
    pub pkt_len: u32,
    pub node_id: u32,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Since v2: `porin_policy_value.policy_id` of the entry that decided the connection.
    pub policy_id: u32,
    /// `PORIN_POLICY_MATCH_*`.
    pub policy_match: u8,
    pub pad2: [u8; 3],
}

/// Size of the first `porin_flow_event` layout (up to `daddr`), which records may still have
/// while a restarted agent swaps the previous programs: the later fields read as zero.
pub const FLOW_EVENT_V1_SIZE: usize = 80;

/// `struct porin_metrics_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MetricsKey {
    pub reason: u8,
    pub direction: u8,
    pub pad: [u8; 2],
}

/// `struct porin_metrics_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsValue {
    pub packets: u64,
    pub bytes: u64,
}

/// `struct porin_ipcache_key` without its leading `prefixlen`: aya's `lpm_trie::Key` adds it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IpcacheKeyData {
    pub family: u8,
    pub pad: [u8; 3],
    pub addr: [u8; 16],
}

/// `struct porin_ipcache_key` in full (for the layout check).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IpcacheKey {
    pub prefixlen: u32,
    pub family: u8,
    pub pad: [u8; 3],
    pub addr: [u8; 16],
}

/// `struct porin_ipcache_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpcacheValue {
    pub identity: u32,
    pub flags: u8,
    pub pad: [u8; 3],
}

/// `struct porin_endpoint_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub family: u8,
    pub pad: [u8; 3],
    pub addr: [u8; 16],
}

/// `struct porin_endpoint_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointValue {
    pub endpoint_id: u32,
    pub ifindex: u32,
    pub identity: u32,
}

/// `struct porin_lb_svc_key`: a frontend. `vip` in network byte order, `port` in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LbSvcKey {
    pub vip: u32,
    pub port: u16,
    pub proto: u8,
    pub pad: u8,
}

/// `struct porin_lb_svc_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbSvcValue {
    pub service_id: u32,
    pub backend_count: u32,
    pub flags: u32,
}

/// `struct porin_lb_slot_key`: slot `slot` of service `service_id`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LbSlotKey {
    pub service_id: u32,
    pub slot: u32,
}

/// `struct porin_lb_backend`. `addr` in network byte order, `port` in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LbBackend {
    pub addr: u32,
    pub port: u16,
    pub pad: [u8; 2],
}

/// `struct porin_lb_svc6_key`: an IPv6 frontend. `vip` as on the wire, `port` in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LbSvc6Key {
    pub vip: [u8; 16],
    pub port: u16,
    pub proto: u8,
    pub pad: u8,
}

/// `struct porin_lb_backend6`. `addr` as on the wire, `port` in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LbBackend6 {
    pub addr: [u8; 16],
    pub port: u16,
    pub pad: [u8; 2],
}

/// `struct porin_lb_nat_entry`: a translated connection (forward or reverse).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbNatEntry {
    pub addr: u32,
    pub port: u16,
    pub pad: [u8; 2],
    pub id: u32,
}

/// `struct porin_lb_affinity_key`: a client of one service under `sessionAffinity:
/// ClientIP` (`client` is an IPv4 address in network byte order, or a netns cookie when
/// `netns_cookie` is 1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LbAffinityKey {
    pub client: u64,
    pub service_id: u32,
    pub netns_cookie: u8,
    pub pad: [u8; 3],
}

/// `struct porin_lb_affinity6_key`: a client of one IPv6 frontend under `sessionAffinity:
/// ClientIP` (`client` is an IPv6 address, or a netns cookie in its first 8 bytes when
/// `netns_cookie` is 1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LbAffinity6Key {
    pub client: [u8; 16],
    pub service_id: u32,
    pub netns_cookie: u8,
    pub pad: [u8; 3],
}

/// IPv6 service ids start here (IPv4 ones from 1), so both share `porin_lb_maglev`
/// (`PORIN_LB6_SERVICE_ID_BASE`).
pub const LB6_SERVICE_ID_BASE: u32 = 0x8000_0000;

/// `struct porin_lb_affinity_value`: the client's backend and when it last opened a
/// connection (`bpf_ktime_get_ns`, CLOCK_MONOTONIC).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbAffinityValue {
    pub last_used_ns: u64,
    pub backend_id: u32,
    pub pad: u32,
}

/// `porin_lb_svc_value.flags`: `sessionAffinity: ClientIP`.
pub const LB_F_AFFINITY: u32 = 0x1;
/// `porin_lb_svc_value.flags`: the affinity timeout (seconds) sits above this bit.
pub const LB_AFFINITY_TIMEOUT_SHIFT: u32 = 8;

/// `struct porin_np_nat`: what a NodePort packet becomes (forward or reverse). Addresses in
/// network byte order, ports in host order; `ifindex` 0 means "let the stack route it".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NpNat {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub id: u32,
    pub ifindex: u32,
}

/// `struct porin_policy_ep_key`: one direction of one local endpoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyEpKey {
    pub endpoint_id: u32,
    pub direction: u8,
    pub pad: [u8; 3],
}

/// `struct porin_policy_ep_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyEpValue {
    pub default_deny: u8,
    pub pad: [u8; 3],
}

/// `struct porin_policy_key`: 0 in `identity`, `dport` or `proto` means any.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub endpoint_id: u32,
    pub identity: u32,
    pub dport: u16,
    pub proto: u8,
    pub direction: u8,
}

/// `PORIN_POLICY_ALLOW`.
pub const POLICY_ALLOW: u8 = 1;
/// `PORIN_POLICY_DENY`.
pub const POLICY_DENY: u8 = 2;
/// `PORIN_POLICY_L7_PORT_IDENTITY`: not a peer. An ALLOW entry with this identity marks a
/// port that has HTTP rules for some peers; connections other entries allow on it go to
/// the HTTP proxy too (Cilium redirects the whole port). It allows nothing by itself.
pub const POLICY_L7_PORT_IDENTITY: u32 = 0xffff_ffff;

/// `struct porin_policy_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyValue {
    pub policy_id: u32,
    pub action: u8,
    pub pad: u8,
    /// ALLOW only: non-zero steers the connection to the node's proxy on this port.
    pub proxy_port: u16,
}

/// `struct porin_proxy_key`: the client side of a connection redirected to a proxy
/// (address in network byte order, port in host order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProxyKey {
    pub client_addr: u32,
    pub client_port: u16,
    pub proto: u8,
    pub pad: u8,
}

/// `struct porin_proxy_value`: where a redirected connection was going.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProxyValue {
    /// Network byte order.
    pub orig_daddr: u32,
    pub orig_dport: u16,
    pub proxy_port: u16,
    pub endpoint_id: u32,
    pub dst_identity: u32,
}

// SAFETY: all of these are #[repr(C)] plain data with explicit padding fields, so every bit
// pattern is valid and there are no implicit padding bytes.
unsafe impl aya::Pod for CtKey {}
unsafe impl aya::Pod for ProxyKey {}
unsafe impl aya::Pod for ProxyValue {}
unsafe impl aya::Pod for CtEntry {}
unsafe impl aya::Pod for RawFlowEvent {}
unsafe impl aya::Pod for MetricsKey {}
unsafe impl aya::Pod for MetricsValue {}
unsafe impl aya::Pod for IpcacheKeyData {}
unsafe impl aya::Pod for IpcacheValue {}
unsafe impl aya::Pod for EndpointKey {}
unsafe impl aya::Pod for EndpointValue {}
unsafe impl aya::Pod for LbSvcKey {}
unsafe impl aya::Pod for LbSvcValue {}
unsafe impl aya::Pod for LbSlotKey {}
unsafe impl aya::Pod for LbBackend {}
unsafe impl aya::Pod for LbSvc6Key {}
unsafe impl aya::Pod for LbBackend6 {}
unsafe impl aya::Pod for LbNatEntry {}
unsafe impl aya::Pod for LbAffinityKey {}
unsafe impl aya::Pod for LbAffinityValue {}
unsafe impl aya::Pod for LbAffinity6Key {}
unsafe impl aya::Pod for PolicyEpKey {}
unsafe impl aya::Pod for PolicyEpValue {}
unsafe impl aya::Pod for PolicyKey {}
unsafe impl aya::Pod for PolicyValue {}

/// Encodes an address as (family, 16 bytes); IPv4 uses the first 4 bytes.
pub fn encode_addr(addr: IpAddr) -> (u8, [u8; 16]) {
    let mut out = [0u8; 16];
    match addr {
        IpAddr::V4(a) => {
            out[..4].copy_from_slice(&a.octets());
            (FAMILY_IPV4, out)
        }
        IpAddr::V6(a) => (FAMILY_IPV6, a.octets()),
    }
}

/// Decodes (family, 16 bytes); `None` for an unknown family.
pub fn decode_addr(family: u8, bytes: &[u8; 16]) -> Option<IpAddr> {
    match family {
        FAMILY_IPV4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        FAMILY_IPV6 => Some(IpAddr::V6(Ipv6Addr::from(*bytes))),
        _ => None,
    }
}

/// Why an event was emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A conntrack entry was created.
    NewConnection,
    /// SYN, FIN or RST seen for the first time in this direction of a connection.
    TcpFlags,
    /// The packet was dropped.
    Drop,
    /// A new connection was allowed by a policy entry, or audited (Cilium's policy verdict
    /// notification).
    PolicyVerdict,
}

/// Hubble's `Verdict` (the subset the datapath emits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Forwarded,
    Dropped,
    /// Policy audit mode: the connection would have been dropped and was forwarded.
    Audit,
}

/// Which part of a policy entry matched (`PORIN_POLICY_MATCH_*`, Cilium's
/// `PolicyMatchType`, Hubble's `Flow.policy_match_type`).
pub mod policy_match {
    pub const NONE: u8 = 0;
    pub const L3_ONLY: u8 = 1;
    pub const L3_L4: u8 = 2;
    pub const L4_ONLY: u8 = 3;
    pub const ALL: u8 = 4;
    pub const L3_PROTO: u8 = 5;
    pub const PROTO_ONLY: u8 = 6;
}

/// Direction as seen from the pod; also the observation point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// To the pod (tcx egress of the host-side veth): Hubble's `TO_ENDPOINT`.
    Ingress,
    /// From the pod (tcx ingress of the host-side veth): Hubble's `FROM_ENDPOINT`.
    Egress,
}

impl Direction {
    /// The C value (`PORIN_DIR_*`).
    pub const fn as_raw(self) -> u8 {
        match self {
            Self::Ingress => 1,
            Self::Egress => 2,
        }
    }

    /// From the C value.
    pub const fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            1 => Some(Self::Ingress),
            2 => Some(Self::Egress),
            _ => None,
        }
    }
}

macro_rules! drop_reasons {
    ($($variant:ident = $num:literal => $name:literal,)*) => {
        /// Cilium's drop reasons, numbered and named as in Hubble's `flow.proto` `DropReason`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum DropReason {
            $($variant,)*
            /// A code this build does not know.
            Other(u8),
        }

        impl DropReason {
            /// The numeric code (`flow.proto` value).
            pub const fn code(self) -> u8 {
                match self {
                    $(Self::$variant => $num,)*
                    Self::Other(n) => n,
                }
            }

            /// From the numeric code.
            pub const fn from_code(code: u8) -> Self {
                match code {
                    $($num => Self::$variant,)*
                    n => Self::Other(n),
                }
            }

            /// The `flow.proto` enum value name.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                    Self::Other(_) => "DROP_REASON_UNKNOWN",
                }
            }
        }
    };
}

drop_reasons! {
    InvalidSourceMac = 130 => "INVALID_SOURCE_MAC",
    InvalidDestinationMac = 131 => "INVALID_DESTINATION_MAC",
    InvalidSourceIp = 132 => "INVALID_SOURCE_IP",
    PolicyDenied = 133 => "POLICY_DENIED",
    InvalidPacketDropped = 134 => "INVALID_PACKET_DROPPED",
    CtTruncatedOrInvalidHeader = 135 => "CT_TRUNCATED_OR_INVALID_HEADER",
    CtMissingTcpAckFlag = 136 => "CT_MISSING_TCP_ACK_FLAG",
    CtUnknownL4Protocol = 137 => "CT_UNKNOWN_L4_PROTOCOL",
    CtCannotCreateEntryFromPacket = 138 => "CT_CANNOT_CREATE_ENTRY_FROM_PACKET",
    UnsupportedL3Protocol = 139 => "UNSUPPORTED_L3_PROTOCOL",
    MissedTailCall = 140 => "MISSED_TAIL_CALL",
    ErrorWritingToPacket = 141 => "ERROR_WRITING_TO_PACKET",
    UnknownL4Protocol = 142 => "UNKNOWN_L4_PROTOCOL",
    UnknownIcmpv4Code = 143 => "UNKNOWN_ICMPV4_CODE",
    UnknownIcmpv4Type = 144 => "UNKNOWN_ICMPV4_TYPE",
    UnknownIcmpv6Code = 145 => "UNKNOWN_ICMPV6_CODE",
    UnknownIcmpv6Type = 146 => "UNKNOWN_ICMPV6_TYPE",
    ErrorRetrievingTunnelKey = 147 => "ERROR_RETRIEVING_TUNNEL_KEY",
    ErrorRetrievingTunnelOptions = 148 => "ERROR_RETRIEVING_TUNNEL_OPTIONS",
    InvalidGeneveOption = 149 => "INVALID_GENEVE_OPTION",
    UnknownL3TargetAddress = 150 => "UNKNOWN_L3_TARGET_ADDRESS",
    StaleOrUnroutableIp = 151 => "STALE_OR_UNROUTABLE_IP",
    NoMatchingLocalContainerFound = 152 => "NO_MATCHING_LOCAL_CONTAINER_FOUND",
    ErrorWhileCorrectingL3Checksum = 153 => "ERROR_WHILE_CORRECTING_L3_CHECKSUM",
    ErrorWhileCorrectingL4Checksum = 154 => "ERROR_WHILE_CORRECTING_L4_CHECKSUM",
    CtMapInsertionFailed = 155 => "CT_MAP_INSERTION_FAILED",
    InvalidIpv6ExtensionHeader = 156 => "INVALID_IPV6_EXTENSION_HEADER",
    IpFragmentationNotSupported = 157 => "IP_FRAGMENTATION_NOT_SUPPORTED",
    ServiceBackendNotFound = 158 => "SERVICE_BACKEND_NOT_FOUND",
    NoTunnelOrEncapsulationEndpoint = 160 => "NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT",
    FailedToInsertIntoProxymap = 161 => "FAILED_TO_INSERT_INTO_PROXYMAP",
    PolicyDeny = 181 => "POLICY_DENY",
    UnencryptedTraffic = 195 => "UNENCRYPTED_TRAFFIC",
}

/// A decoded flow event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowEvent {
    /// `bpf_ktime_get_ns()` (monotonic clock) when the event was written.
    pub ktime_ns: u64,
    pub event_type: EventType,
    pub verdict: Verdict,
    /// Set for drops.
    pub drop_reason: Option<DropReason>,
    pub direction: Direction,
    /// `None` when the L3 header could not be read (e.g. truncated).
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    /// `IPPROTO_*`, 0 when unknown.
    pub l4_proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub ifindex: u32,
    pub src_identity: u32,
    pub dst_identity: u32,
    /// Local endpoint id from the endpoints map, 0 when unknown.
    pub endpoint_id: u32,
    pub is_reply: bool,
    /// The packet crossed the WireGuard tunnel (`PORIN_EVENT_F_ENCRYPTED`).
    pub encrypted: bool,
    pub pkt_len: u32,
    pub node_id: u32,
    /// The policy entry that decided the connection (`porin_policy_value.policy_id`): set on
    /// policy verdicts, on drops by a deny entry (181) and on audits; 0 when no entry decided
    /// (default deny, no policy) and on other events.
    pub policy_id: u32,
    /// [`policy_match`] of that entry.
    pub policy_match: u8,
}

/// A ring buffer record that is not a valid `porin_flow_event`.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("flow event record is {got} bytes, expected at least {expected}")]
    Short { got: usize, expected: usize },
    #[error("flow event has unknown {field} value {value}")]
    UnknownValue { field: &'static str, value: u8 },
}

impl RawFlowEvent {
    /// Reads a record from ring buffer bytes (any alignment). A record of the first, shorter
    /// layout ([`FLOW_EVENT_V1_SIZE`]) is accepted with the later fields zero.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < FLOW_EVENT_V1_SIZE {
            return Err(DecodeError::Short {
                got: bytes.len(),
                expected: FLOW_EVENT_V1_SIZE,
            });
        }
        let mut full = [0u8; size_of::<Self>()];
        let n = bytes.len().min(full.len());
        full[..n].copy_from_slice(&bytes[..n]);
        // SAFETY: `full` holds size_of::<Self>() bytes, RawFlowEvent is plain data valid for
        // any bit pattern, and read_unaligned has no alignment requirement.
        Ok(unsafe { std::ptr::read_unaligned(full.as_ptr().cast::<Self>()) })
    }
}

impl TryFrom<&RawFlowEvent> for FlowEvent {
    type Error = DecodeError;

    fn try_from(raw: &RawFlowEvent) -> Result<Self, DecodeError> {
        let event_type = match raw.r#type {
            1 => EventType::NewConnection,
            2 => EventType::TcpFlags,
            3 => EventType::Drop,
            4 => EventType::PolicyVerdict,
            value => {
                return Err(DecodeError::UnknownValue {
                    field: "type",
                    value,
                });
            }
        };
        let verdict = match raw.verdict {
            1 => Verdict::Forwarded,
            2 => Verdict::Dropped,
            4 => Verdict::Audit,
            value => {
                return Err(DecodeError::UnknownValue {
                    field: "verdict",
                    value,
                });
            }
        };
        let direction = Direction::from_raw(raw.direction).ok_or(DecodeError::UnknownValue {
            field: "direction",
            value: raw.direction,
        })?;
        Ok(Self {
            ktime_ns: raw.ktime_ns,
            event_type,
            verdict,
            drop_reason: (raw.drop_reason != 0).then(|| DropReason::from_code(raw.drop_reason)),
            direction,
            src: decode_addr(raw.family, &raw.saddr),
            dst: decode_addr(raw.family, &raw.daddr),
            l4_proto: raw.l4_proto,
            src_port: raw.sport,
            dst_port: raw.dport,
            tcp_flags: raw.tcp_flags,
            icmp_type: raw.icmp_type,
            icmp_code: raw.icmp_code,
            ifindex: raw.ifindex,
            src_identity: raw.src_identity,
            dst_identity: raw.dst_identity,
            endpoint_id: raw.endpoint_id,
            is_reply: raw.is_reply != 0,
            encrypted: raw.flags & EVENT_FLAG_ENCRYPTED != 0,
            pkt_len: raw.pkt_len,
            node_id: raw.node_id,
            policy_id: raw.policy_id,
            policy_match: raw.policy_match,
        })
    }
}

impl FlowEvent {
    /// Decodes one ring buffer record.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::try_from(&RawFlowEvent::from_bytes(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use super::*;

    mod c {
        include!(concat!(env!("OUT_DIR"), "/abi_layout.rs"));
    }

    macro_rules! check {
        ($ty:ty, $size:path, $($field:ident => $off:path),* $(,)?) => {
            assert_eq!(size_of::<$ty>(), $size, "size of {}", stringify!($ty));
            $(assert_eq!(
                offset_of!($ty, $field), $off,
                "offset of {}.{}", stringify!($ty), stringify!($field)
            );)*
        };
    }

    #[test]
    fn layouts_match_common_h() {
        check!(CtKey, c::PORIN_CT_KEY_SIZE,
            saddr => c::PORIN_CT_KEY__SADDR, daddr => c::PORIN_CT_KEY__DADDR,
            sport => c::PORIN_CT_KEY__SPORT, dport => c::PORIN_CT_KEY__DPORT,
            family => c::PORIN_CT_KEY__FAMILY, l4_proto => c::PORIN_CT_KEY__L4_PROTO,
            pad => c::PORIN_CT_KEY__PAD);
        check!(CtEntry, c::PORIN_CT_ENTRY_SIZE,
            created_ns => c::PORIN_CT_ENTRY__CREATED_NS,
            last_seen_ns => c::PORIN_CT_ENTRY__LAST_SEEN_NS,
            packets => c::PORIN_CT_ENTRY__PACKETS, bytes => c::PORIN_CT_ENTRY__BYTES,
            tcp_flags_seen => c::PORIN_CT_ENTRY__TCP_FLAGS_SEEN);
        check!(RawFlowEvent, c::PORIN_FLOW_EVENT_SIZE,
            ktime_ns => c::PORIN_FLOW_EVENT__KTIME_NS, r#type => c::PORIN_FLOW_EVENT__TYPE,
            verdict => c::PORIN_FLOW_EVENT__VERDICT,
            drop_reason => c::PORIN_FLOW_EVENT__DROP_REASON,
            direction => c::PORIN_FLOW_EVENT__DIRECTION,
            family => c::PORIN_FLOW_EVENT__FAMILY, l4_proto => c::PORIN_FLOW_EVENT__L4_PROTO,
            tcp_flags => c::PORIN_FLOW_EVENT__TCP_FLAGS,
            icmp_type => c::PORIN_FLOW_EVENT__ICMP_TYPE,
            icmp_code => c::PORIN_FLOW_EVENT__ICMP_CODE,
            is_reply => c::PORIN_FLOW_EVENT__IS_REPLY, flags => c::PORIN_FLOW_EVENT__FLAGS,
            pad => c::PORIN_FLOW_EVENT__PAD,
            sport => c::PORIN_FLOW_EVENT__SPORT, dport => c::PORIN_FLOW_EVENT__DPORT,
            ifindex => c::PORIN_FLOW_EVENT__IFINDEX,
            src_identity => c::PORIN_FLOW_EVENT__SRC_IDENTITY,
            dst_identity => c::PORIN_FLOW_EVENT__DST_IDENTITY,
            endpoint_id => c::PORIN_FLOW_EVENT__ENDPOINT_ID,
            pkt_len => c::PORIN_FLOW_EVENT__PKT_LEN, node_id => c::PORIN_FLOW_EVENT__NODE_ID,
            saddr => c::PORIN_FLOW_EVENT__SADDR, daddr => c::PORIN_FLOW_EVENT__DADDR,
            policy_id => c::PORIN_FLOW_EVENT__POLICY_ID,
            policy_match => c::PORIN_FLOW_EVENT__POLICY_MATCH,
            pad2 => c::PORIN_FLOW_EVENT__PAD2);
        assert_eq!(c::PORIN_FLOW_EVENT__POLICY_ID, FLOW_EVENT_V1_SIZE);
        check!(MetricsKey, c::PORIN_METRICS_KEY_SIZE,
            reason => c::PORIN_METRICS_KEY__REASON,
            direction => c::PORIN_METRICS_KEY__DIRECTION, pad => c::PORIN_METRICS_KEY__PAD);
        check!(MetricsValue, c::PORIN_METRICS_VALUE_SIZE,
            packets => c::PORIN_METRICS_VALUE__PACKETS, bytes => c::PORIN_METRICS_VALUE__BYTES);
        check!(IpcacheKey, c::PORIN_IPCACHE_KEY_SIZE,
            prefixlen => c::PORIN_IPCACHE_KEY__PREFIXLEN,
            family => c::PORIN_IPCACHE_KEY__FAMILY, pad => c::PORIN_IPCACHE_KEY__PAD,
            addr => c::PORIN_IPCACHE_KEY__ADDR);
        // The LPM key data is the full key minus its leading u32 prefixlen.
        assert_eq!(size_of::<IpcacheKeyData>() + 4, c::PORIN_IPCACHE_KEY_SIZE);
        check!(IpcacheValue, c::PORIN_IPCACHE_VALUE_SIZE,
            identity => c::PORIN_IPCACHE_VALUE__IDENTITY,
            flags => c::PORIN_IPCACHE_VALUE__FLAGS, pad => c::PORIN_IPCACHE_VALUE__PAD);
        check!(EndpointKey, c::PORIN_ENDPOINT_KEY_SIZE,
            family => c::PORIN_ENDPOINT_KEY__FAMILY, pad => c::PORIN_ENDPOINT_KEY__PAD,
            addr => c::PORIN_ENDPOINT_KEY__ADDR);
        check!(EndpointValue, c::PORIN_ENDPOINT_VALUE_SIZE,
            endpoint_id => c::PORIN_ENDPOINT_VALUE__ENDPOINT_ID,
            ifindex => c::PORIN_ENDPOINT_VALUE__IFINDEX,
            identity => c::PORIN_ENDPOINT_VALUE__IDENTITY);
        check!(LbSvcKey, c::PORIN_LB_SVC_KEY_SIZE,
            vip => c::PORIN_LB_SVC_KEY__VIP, port => c::PORIN_LB_SVC_KEY__PORT,
            proto => c::PORIN_LB_SVC_KEY__PROTO, pad => c::PORIN_LB_SVC_KEY__PAD);
        check!(LbSvc6Key, c::PORIN_LB_SVC6_KEY_SIZE,
            vip => c::PORIN_LB_SVC6_KEY__VIP, port => c::PORIN_LB_SVC6_KEY__PORT,
            proto => c::PORIN_LB_SVC6_KEY__PROTO, pad => c::PORIN_LB_SVC6_KEY__PAD);
        check!(LbBackend6, c::PORIN_LB_BACKEND6_SIZE,
            addr => c::PORIN_LB_BACKEND6__ADDR, port => c::PORIN_LB_BACKEND6__PORT,
            pad => c::PORIN_LB_BACKEND6__PAD);
        check!(LbSvcValue, c::PORIN_LB_SVC_VALUE_SIZE,
            service_id => c::PORIN_LB_SVC_VALUE__SERVICE_ID,
            backend_count => c::PORIN_LB_SVC_VALUE__BACKEND_COUNT,
            flags => c::PORIN_LB_SVC_VALUE__FLAGS);
        check!(LbSlotKey, c::PORIN_LB_SLOT_KEY_SIZE,
            service_id => c::PORIN_LB_SLOT_KEY__SERVICE_ID, slot => c::PORIN_LB_SLOT_KEY__SLOT);
        check!(LbBackend, c::PORIN_LB_BACKEND_SIZE,
            addr => c::PORIN_LB_BACKEND__ADDR, port => c::PORIN_LB_BACKEND__PORT,
            pad => c::PORIN_LB_BACKEND__PAD);
        check!(LbNatEntry, c::PORIN_LB_NAT_ENTRY_SIZE,
            addr => c::PORIN_LB_NAT_ENTRY__ADDR, port => c::PORIN_LB_NAT_ENTRY__PORT,
            pad => c::PORIN_LB_NAT_ENTRY__PAD, id => c::PORIN_LB_NAT_ENTRY__ID);
        check!(LbAffinityKey, c::PORIN_LB_AFFINITY_KEY_SIZE,
            client => c::PORIN_LB_AFFINITY_KEY__CLIENT,
            service_id => c::PORIN_LB_AFFINITY_KEY__SERVICE_ID,
            netns_cookie => c::PORIN_LB_AFFINITY_KEY__NETNS_COOKIE,
            pad => c::PORIN_LB_AFFINITY_KEY__PAD);
        check!(LbAffinity6Key, c::PORIN_LB_AFFINITY6_KEY_SIZE,
            client => c::PORIN_LB_AFFINITY6_KEY__CLIENT,
            service_id => c::PORIN_LB_AFFINITY6_KEY__SERVICE_ID,
            netns_cookie => c::PORIN_LB_AFFINITY6_KEY__NETNS_COOKIE,
            pad => c::PORIN_LB_AFFINITY6_KEY__PAD);
        check!(LbAffinityValue, c::PORIN_LB_AFFINITY_VALUE_SIZE,
            last_used_ns => c::PORIN_LB_AFFINITY_VALUE__LAST_USED_NS,
            backend_id => c::PORIN_LB_AFFINITY_VALUE__BACKEND_ID,
            pad => c::PORIN_LB_AFFINITY_VALUE__PAD);
        check!(NpNat, c::PORIN_NP_NAT_SIZE,
            saddr => c::PORIN_NP_NAT__SADDR, daddr => c::PORIN_NP_NAT__DADDR,
            sport => c::PORIN_NP_NAT__SPORT, dport => c::PORIN_NP_NAT__DPORT,
            id => c::PORIN_NP_NAT__ID, ifindex => c::PORIN_NP_NAT__IFINDEX);
        check!(PolicyEpKey, c::PORIN_POLICY_EP_KEY_SIZE,
            endpoint_id => c::PORIN_POLICY_EP_KEY__ENDPOINT_ID,
            direction => c::PORIN_POLICY_EP_KEY__DIRECTION, pad => c::PORIN_POLICY_EP_KEY__PAD);
        // EncryptMap's aya key: a u32 prefix length, then the address as u32 data.
        assert_eq!(c::PORIN_ENCRYPT_KEY_SIZE, 8);
        assert_eq!(
            (c::PORIN_ENCRYPT_KEY__PREFIXLEN, c::PORIN_ENCRYPT_KEY__ADDR),
            (0, 4)
        );
        check!(PolicyEpValue, c::PORIN_POLICY_EP_VALUE_SIZE,
            default_deny => c::PORIN_POLICY_EP_VALUE__DEFAULT_DENY,
            pad => c::PORIN_POLICY_EP_VALUE__PAD);
        check!(PolicyKey, c::PORIN_POLICY_KEY_SIZE,
            endpoint_id => c::PORIN_POLICY_KEY__ENDPOINT_ID,
            identity => c::PORIN_POLICY_KEY__IDENTITY, dport => c::PORIN_POLICY_KEY__DPORT,
            proto => c::PORIN_POLICY_KEY__PROTO, direction => c::PORIN_POLICY_KEY__DIRECTION);
        check!(PolicyValue, c::PORIN_POLICY_VALUE_SIZE,
            policy_id => c::PORIN_POLICY_VALUE__POLICY_ID,
            action => c::PORIN_POLICY_VALUE__ACTION, pad => c::PORIN_POLICY_VALUE__PAD,
            proxy_port => c::PORIN_POLICY_VALUE__PROXY_PORT);
        check!(ProxyKey, c::PORIN_PROXY_KEY_SIZE,
            client_addr => c::PORIN_PROXY_KEY__CLIENT_ADDR,
            client_port => c::PORIN_PROXY_KEY__CLIENT_PORT,
            proto => c::PORIN_PROXY_KEY__PROTO, pad => c::PORIN_PROXY_KEY__PAD);
        check!(ProxyValue, c::PORIN_PROXY_VALUE_SIZE,
            orig_daddr => c::PORIN_PROXY_VALUE__ORIG_DADDR,
            orig_dport => c::PORIN_PROXY_VALUE__ORIG_DPORT,
            proxy_port => c::PORIN_PROXY_VALUE__PROXY_PORT,
            endpoint_id => c::PORIN_PROXY_VALUE__ENDPOINT_ID,
            dst_identity => c::PORIN_PROXY_VALUE__DST_IDENTITY);
    }

    #[test]
    fn decodes_a_drop_event() {
        let raw = RawFlowEvent {
            ktime_ns: 7,
            r#type: 3,
            verdict: 2,
            drop_reason: 135,
            direction: 2,
            family: FAMILY_IPV4,
            l4_proto: 6,
            saddr: encode_addr(
                "10.0.0.1"
                    .parse()
                    .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            )
            .1,
            ..RawFlowEvent::default()
        };
        // SAFETY: RawFlowEvent is plain data; viewing it as bytes is sound.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const RawFlowEvent).cast::<u8>(),
                size_of::<RawFlowEvent>(),
            )
        };
        let ev = FlowEvent::decode(bytes).expect("decode");
        assert_eq!(ev.event_type, EventType::Drop);
        assert_eq!(ev.verdict, Verdict::Dropped);
        assert_eq!(ev.drop_reason, Some(DropReason::CtTruncatedOrInvalidHeader));
        assert_eq!(ev.direction, Direction::Egress);
        assert_eq!(ev.src, Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
        assert_eq!(
            FlowEvent::decode(&bytes[..10]),
            Err(DecodeError::Short {
                got: 10,
                expected: FLOW_EVENT_V1_SIZE
            })
        );
    }

    #[test]
    fn decodes_policy_verdicts_and_records_of_the_first_layout() {
        let raw = RawFlowEvent {
            r#type: 4,
            verdict: 1,
            direction: 2,
            family: FAMILY_IPV4,
            policy_id: 0xdead_beef,
            policy_match: policy_match::L3_L4,
            ..RawFlowEvent::default()
        };
        // SAFETY: RawFlowEvent is plain data; viewing it as bytes is sound.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const RawFlowEvent).cast::<u8>(),
                size_of::<RawFlowEvent>(),
            )
        };
        let ev = FlowEvent::decode(bytes).expect("decode");
        assert_eq!(ev.event_type, EventType::PolicyVerdict);
        assert_eq!((ev.policy_id, ev.policy_match), (0xdead_beef, 2));
        // An 80-byte record of the previous programs: no policy fields.
        let old = FlowEvent::decode(&bytes[..FLOW_EVENT_V1_SIZE]).expect("decode v1");
        assert_eq!((old.policy_id, old.policy_match), (0, 0));
        assert_eq!(old.event_type, EventType::PolicyVerdict);
    }

    #[test]
    fn drop_reason_names_round_trip() {
        assert_eq!(DropReason::from_code(134).name(), "INVALID_PACKET_DROPPED");
        assert_eq!(DropReason::CtMapInsertionFailed.code(), 155);
        assert_eq!(DropReason::from_code(42), DropReason::Other(42));
    }
}
