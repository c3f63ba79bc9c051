//! Flows: datapath events enriched with endpoint metadata.
//!
//! Field names follow Hubble's `flow.Flow` in its JSON form, so `-o json` output
//! already reads like `hubble observe -o json`; the gRPC API of a later release
//! serves the same data.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use porin_plugin_sdk::{DatapathEvent, Direction, EndpointMeta, EventKind, Verdict};
use serde::{Deserialize, Serialize};

/// One flow as stored in the ring and sent to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// RFC 3339 time with nanoseconds, UTC.
    pub time: String,
    pub verdict: String,
    #[serde(default)]
    pub drop_reason: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_reason_desc: Option<String>,
    #[serde(rename = "IP")]
    pub ip: FlowIp,
    pub l4: L4,
    pub source: FlowEndpoint,
    pub destination: FlowEndpoint,
    #[serde(rename = "Type")]
    pub flow_type: String,
    pub node_name: String,
    /// `to-endpoint`, `from-endpoint` or `drop`: the event's observation in Hubble's words.
    pub event: String,
    pub traffic_direction: String,
    pub trace_observation_point: String,
    #[serde(default)]
    pub is_reply: bool,
    pub interface_index: u32,
}

/// Addresses of the flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowIp {
    pub source: IpAddr,
    pub destination: IpAddr,
    #[serde(rename = "ipVersion")]
    pub ip_version: String,
}

/// Layer 4 of the flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum L4 {
    #[serde(rename = "TCP")]
    Tcp {
        source_port: u16,
        destination_port: u16,
        flags: Vec<String>,
    },
    #[serde(rename = "UDP")]
    Udp {
        source_port: u16,
        destination_port: u16,
    },
    #[serde(rename = "ICMPv4")]
    IcmpV4 { r#type: u8, code: u8 },
    #[serde(rename = "ICMPv6")]
    IcmpV6 { r#type: u8, code: u8 },
    #[serde(rename = "other")]
    Other { protocol: u8 },
}

/// One side of the flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FlowEndpoint {
    #[serde(rename = "ID", default)]
    pub id: u32,
    pub identity: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod_name: String,
}

/// What the flow pipeline needs to turn an event into a flow.
pub trait Enricher {
    fn node_name(&self) -> &str;
    fn endpoint(&self, ip: IpAddr) -> Option<EndpointMeta>;
    fn identity_labels(&self, identity: u32) -> Option<Vec<String>>;
}

/// Converts kernel monotonic timestamps to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Wall-clock time at monotonic time zero.
    boot: SystemTime,
}

impl Clock {
    /// Measure the offset between CLOCK_REALTIME and CLOCK_MONOTONIC now.
    pub fn now() -> Self {
        let mono = monotonic_now();
        let boot = SystemTime::now().checked_sub(mono).unwrap_or(UNIX_EPOCH);
        Self { boot }
    }

    /// Wall-clock time of a `bpf_ktime_get_ns()` value.
    pub fn wall(&self, ktime_ns: u64) -> SystemTime {
        self.boot + Duration::from_nanos(ktime_ns)
    }
}

fn monotonic_now() -> Duration {
    let mut ts = libc_timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the pointer we own.
    let rc = unsafe { clock_gettime(CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

#[repr(C)]
struct libc_timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

const CLOCK_MONOTONIC: i32 = 1;

unsafe extern "C" {
    fn clock_gettime(clock: i32, ts: *mut libc_timespec) -> i32;
}

/// Turn a datapath event into a flow, resolving both endpoints.
pub fn enrich(event: &DatapathEvent, clock: &Clock, ctx: &dyn Enricher) -> Flow {
    let side = |ip: IpAddr, identity: u32| -> FlowEndpoint {
        match ctx.endpoint(ip) {
            Some(meta) => FlowEndpoint {
                id: meta.id,
                identity: if identity > 2 {
                    identity
                } else {
                    meta.identity
                },
                namespace: meta.namespace,
                labels: meta.labels,
                pod_name: meta.pod_name,
            },
            None => FlowEndpoint {
                id: 0,
                identity,
                labels: ctx.identity_labels(identity).unwrap_or_default(),
                ..FlowEndpoint::default()
            },
        }
    };
    let (direction, point, observed) = match event.direction {
        Direction::ToEndpoint => ("INGRESS", "TO_ENDPOINT", "to-endpoint"),
        Direction::FromEndpoint => ("EGRESS", "FROM_ENDPOINT", "from-endpoint"),
    };
    let dropped = event.verdict == Verdict::Dropped || event.kind == EventKind::Drop;
    Flow {
        time: rfc3339(clock.wall(event.ktime_ns)),
        verdict: if dropped { "DROPPED" } else { "FORWARDED" }.to_string(),
        drop_reason: u32::from(event.drop_reason),
        drop_reason_desc: dropped.then(|| drop_reason_name(event.drop_reason).to_string()),
        ip: FlowIp {
            source: event.src,
            destination: event.dst,
            ip_version: if event.src.is_ipv4() { "IPv4" } else { "IPv6" }.to_string(),
        },
        l4: l4(event),
        source: side(event.src, event.src_identity),
        destination: side(event.dst, event.dst_identity),
        flow_type: "L3_L4".to_string(),
        node_name: ctx.node_name().to_string(),
        event: if dropped { "drop" } else { observed }.to_string(),
        traffic_direction: direction.to_string(),
        trace_observation_point: point.to_string(),
        is_reply: event.is_reply,
        interface_index: event.ifindex,
    }
}

fn l4(event: &DatapathEvent) -> L4 {
    match event.protocol {
        6 => L4::Tcp {
            source_port: event.src_port,
            destination_port: event.dst_port,
            flags: tcp_flag_names(event.tcp_flags),
        },
        17 => L4::Udp {
            source_port: event.src_port,
            destination_port: event.dst_port,
        },
        1 => L4::IcmpV4 {
            r#type: event.icmp_type,
            code: event.icmp_code,
        },
        58 => L4::IcmpV6 {
            r#type: event.icmp_type,
            code: event.icmp_code,
        },
        other => L4::Other { protocol: other },
    }
}

/// TCP flag names in Hubble's order.
pub fn tcp_flag_names(flags: u8) -> Vec<String> {
    [
        (0x02, "SYN"),
        (0x10, "ACK"),
        (0x01, "FIN"),
        (0x04, "RST"),
        (0x08, "PSH"),
        (0x20, "URG"),
    ]
    .iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, name)| (*name).to_string())
    .collect()
}

/// Cilium's names of the drop reasons the datapath emits (flow.proto `DropReason`).
pub fn drop_reason_name(code: u8) -> &'static str {
    match code {
        130 => "INVALID_SOURCE_MAC",
        131 => "INVALID_DESTINATION_MAC",
        132 => "INVALID_SOURCE_IP",
        133 => "POLICY_DENIED",
        134 => "INVALID_PACKET_DROPPED",
        135 => "CT_TRUNCATED_OR_INVALID_HEADER",
        136 => "CT_MISSING_TCP_ACK_FLAG",
        137 => "CT_UNKNOWN_L4_PROTOCOL",
        138 => "CT_CANNOT_CREATE_ENTRY_FROM_PACKET",
        139 => "UNSUPPORTED_L3_PROTOCOL",
        140 => "MISSED_TAIL_CALL",
        141 => "ERROR_WRITING_TO_PACKET",
        142 => "UNKNOWN_L4_PROTOCOL",
        143 => "UNKNOWN_ICMPV4_CODE",
        144 => "UNKNOWN_ICMPV4_TYPE",
        145 => "UNKNOWN_ICMPV6_CODE",
        146 => "UNKNOWN_ICMPV6_TYPE",
        153 => "ERROR_WHILE_CORRECTING_L3_CHECKSUM",
        154 => "ERROR_WHILE_CORRECTING_L4_CHECKSUM",
        155 => "CT_MAP_INSERTION_FAILED",
        156 => "INVALID_IPV6_EXTENSION_HEADER",
        157 => "IP_FRAGMENTATION_NOT_SUPPORTED",
        158 => "SERVICE_BACKEND_NOT_FOUND",
        160 => "NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT",
        181 => "POLICY_DENY",
        _ => "DROP_REASON_UNKNOWN",
    }
}

/// Format a wall-clock time as RFC 3339 in UTC with nanoseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reason_names_follow_cilium_numbering() {
        assert_eq!(drop_reason_name(135), "CT_TRUNCATED_OR_INVALID_HEADER");
        assert_eq!(drop_reason_name(138), "CT_CANNOT_CREATE_ENTRY_FROM_PACKET");
        assert_eq!(drop_reason_name(155), "CT_MAP_INSERTION_FAILED");
        assert_eq!(drop_reason_name(158), "SERVICE_BACKEND_NOT_FOUND");
        assert_eq!(drop_reason_name(160), "NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT");
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_795_000_000, 5);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.000000005Z");
    }

    #[test]
    fn tcp_flags_in_hubble_order() {
        assert_eq!(tcp_flag_names(0x12), vec!["SYN", "ACK"]);
        assert_eq!(tcp_flag_names(0x04), vec!["RST"]);
        assert!(tcp_flag_names(0).is_empty());
    }
}
