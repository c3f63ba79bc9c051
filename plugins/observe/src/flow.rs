//! Flows: datapath events enriched with endpoint metadata.
//!
//! Events become Hubble's `flow.Flow` (from hubble-proto) right here, so the ring,
//! the Observer API and `porin observe` all carry the one type clients decode.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::atomic::{AtomicU64, Ordering};

use hubble_proto::flow as pb;
use hubble_proto::flow::layer4::Protocol;
use hubble_proto::{BoolValue, Timestamp};
use porin_plugin_sdk::{DatapathEvent, Direction, EndpointMeta, EventKind, PolicyInfo, Verdict};

/// What the flow pipeline needs to turn an event into a flow.
pub trait Enricher {
    fn node_name(&self) -> &str;
    fn endpoint(&self, ip: IpAddr) -> Option<EndpointMeta>;
    fn identity_labels(&self, identity: u32) -> Option<Vec<String>>;
    /// The policy a policy map entry's id stands for (the policy plugin's table).
    fn policy(&self, _id: u32) -> Option<PolicyInfo> {
        None
    }
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

/// Hubble's Endpoint of resolved metadata.
pub fn endpoint_of(meta: EndpointMeta) -> pb::Endpoint {
    pb::Endpoint {
        id: meta.id,
        identity: meta.identity,
        namespace: meta.namespace,
        labels: meta.labels,
        pod_name: meta.pod_name,
        workloads: meta
            .workload
            .map(|(kind, name)| pb::Workload { name, kind })
            .into_iter()
            .collect(),
    }
}

/// Hubble's Endpoint of an address no endpoint owns: its identity and labels.
pub fn identity_endpoint(identity: u32, labels: Vec<String>) -> pb::Endpoint {
    pb::Endpoint {
        identity,
        labels,
        ..pb::Endpoint::default()
    }
}

/// One side of an event, resolved without a cache.
fn resolve_side(ctx: &dyn Enricher, ip: IpAddr, identity: u32) -> pb::Endpoint {
    match ctx.endpoint(ip) {
        Some(meta) => endpoint_of(meta),
        None => identity_endpoint(identity, ctx.identity_labels(identity).unwrap_or_default()),
    }
}

/// Turn a datapath event into a Hubble flow, resolving both endpoints (and the deciding
/// policy) now.
pub fn enrich(event: &DatapathEvent, clock: &Clock, ctx: &dyn Enricher) -> pb::Flow {
    let mut flow = assemble(
        event,
        clock.wall(event.ktime_ns),
        next_seq(),
        ctx.node_name(),
        &resolve_side(ctx, event.src, event.src_identity),
        &resolve_side(ctx, event.dst, event.dst_identity),
    );
    if event.policy_id != 0
        && let Some(info) = ctx.policy(event.policy_id)
    {
        attribute_policy(&mut flow, event, &crate::policies::policy_of(info));
    }
    flow
}

/// Names the policy that decided the flow, as Hubble's policy correlation does: an allowed
/// policy verdict in `*_allowed_by`, a drop by a deny rule (181) in `*_denied_by` (and, beyond
/// Hubble, an audit of a deny rule). Default-deny drops (133) name no policy.
pub fn attribute_policy(flow: &mut pb::Flow, event: &DatapathEvent, policy: &pb::Policy) {
    let egress = event.direction == Direction::FromEndpoint;
    let denied = event.drop_reason == DROP_REASON_POLICY_DENY
        && (event.kind == EventKind::Drop || event.verdict == Verdict::Audit);
    let allowed = event.kind == EventKind::PolicyVerdict && event.verdict == Verdict::Forwarded;
    let list = match (allowed, denied, egress) {
        (true, _, true) => &mut flow.egress_allowed_by,
        (true, _, false) => &mut flow.ingress_allowed_by,
        (_, true, true) => &mut flow.egress_denied_by,
        (_, true, false) => &mut flow.ingress_denied_by,
        _ => return,
    };
    list.push(policy.clone());
}

/// Drop reason of a drop by an explicit deny rule (`POLICY_DENY`).
pub const DROP_REASON_POLICY_DENY: u8 = 181;

/// A number unique per agent process, part of each flow's uuid.
pub fn next_seq() -> u64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// The Hubble flow of an event whose endpoints are resolved. The event's
/// identity wins over the endpoint's when the datapath knew one (> world).
pub fn assemble(
    event: &DatapathEvent,
    wall: SystemTime,
    seq: u64,
    node: &str,
    source: &pb::Endpoint,
    destination: &pb::Endpoint,
) -> pb::Flow {
    let side = |ep: &pb::Endpoint, identity: u32| {
        let mut ep = ep.clone();
        if identity > 2 {
            ep.identity = identity;
        }
        ep
    };
    let (direction, point, sub_type) = match event.direction {
        Direction::ToEndpoint => (
            pb::TrafficDirection::Ingress,
            pb::TraceObservationPoint::ToEndpoint,
            TRACE_TO_LXC,
        ),
        Direction::FromEndpoint => (
            pb::TrafficDirection::Egress,
            pb::TraceObservationPoint::FromEndpoint,
            TRACE_FROM_LXC,
        ),
    };
    let dropped = event.verdict == Verdict::Dropped || event.kind == EventKind::Drop;
    let policy_verdict = event.kind == EventKind::PolicyVerdict;
    let reason = i32::from(event.drop_reason);
    pb::Flow {
        time: Some(timestamp(wall)),
        uuid: flow_uuid(wall, seq, event),
        verdict: if dropped {
            pb::Verdict::Dropped
        } else if event.verdict == Verdict::Audit {
            pb::Verdict::Audit
        } else {
            pb::Verdict::Forwarded
        } as i32,
        drop_reason: if dropped {
            u32::from(event.drop_reason)
        } else {
            0
        },
        drop_reason_desc: if dropped && pb::DropReason::try_from(reason).is_ok() {
            reason
        } else {
            0
        },
        ip: Some(pb::Ip {
            source: event.src.to_string(),
            destination: event.dst.to_string(),
            ip_version: if event.src.is_ipv4() {
                pb::IpVersion::IPv4
            } else {
                pb::IpVersion::IPv6
            } as i32,
            encrypted: event.encrypted,
        }),
        l4: l4(event),
        source: Some(side(source, event.src_identity)),
        destination: Some(side(destination, event.dst_identity)),
        r#type: pb::FlowType::L3L4 as i32,
        node_name: node.to_string(),
        event_type: Some(if policy_verdict {
            pb::CiliumEventType {
                r#type: MESSAGE_TYPE_POLICY_VERDICT,
                sub_type: 0,
            }
        } else if dropped {
            pb::CiliumEventType {
                r#type: MESSAGE_TYPE_DROP,
                sub_type: reason,
            }
        } else {
            pb::CiliumEventType {
                r#type: MESSAGE_TYPE_TRACE,
                sub_type,
            }
        }),
        traffic_direction: direction as i32,
        // Hubble fills it on policy verdicts; Porin also on drops by a deny rule, which stand
        // for Cilium's denied verdicts.
        policy_match_type: if policy_verdict
            || (dropped && event.drop_reason == DROP_REASON_POLICY_DENY)
        {
            u32::from(event.policy_match)
        } else {
            0
        },
        // Hubble sets the observation point on trace events only.
        trace_observation_point: if dropped || policy_verdict {
            pb::TraceObservationPoint::UnknownPoint
        } else {
            point
        } as i32,
        is_reply: Some(BoolValue {
            value: event.is_reply,
        }),
        interface: (event.ifindex != 0).then(|| pb::NetworkInterface {
            index: event.ifindex,
            name: String::new(),
        }),
        ..pb::Flow::default()
    }
}

/// Cilium's monitor message types (`pkg/monitor/api/types.go`).
pub const MESSAGE_TYPE_DROP: i32 = 1;
pub const MESSAGE_TYPE_TRACE: i32 = 4;
/// Policy verdict notifications (`hubble observe --type policy-verdict`).
pub const MESSAGE_TYPE_POLICY_VERDICT: i32 = 5;
/// Trace sub-types: delivered to the endpoint, and sent by it.
pub const TRACE_TO_LXC: i32 = 0;
pub const TRACE_FROM_LXC: i32 = 5;

fn l4(event: &DatapathEvent) -> Option<pb::Layer4> {
    let protocol = match event.protocol {
        6 => Protocol::Tcp(pb::Tcp {
            source_port: u32::from(event.src_port),
            destination_port: u32::from(event.dst_port),
            flags: Some(tcp_flags(event.tcp_flags)),
        }),
        17 => Protocol::Udp(pb::Udp {
            source_port: u32::from(event.src_port),
            destination_port: u32::from(event.dst_port),
        }),
        1 => Protocol::IcmPv4(pb::IcmPv4 {
            r#type: u32::from(event.icmp_type),
            code: u32::from(event.icmp_code),
        }),
        58 => Protocol::IcmPv6(pb::IcmPv6 {
            r#type: u32::from(event.icmp_type),
            code: u32::from(event.icmp_code),
        }),
        _ => return None,
    };
    Some(pb::Layer4 {
        protocol: Some(protocol),
    })
}

/// The TCP flags byte as Hubble's `TCPFlags`.
pub fn tcp_flags(flags: u8) -> pb::TcpFlags {
    pb::TcpFlags {
        fin: flags & 0x01 != 0,
        syn: flags & 0x02 != 0,
        rst: flags & 0x04 != 0,
        psh: flags & 0x08 != 0,
        ack: flags & 0x10 != 0,
        urg: flags & 0x20 != 0,
        ece: flags & 0x40 != 0,
        cwr: flags & 0x80 != 0,
        ns: false,
    }
}

/// A protobuf timestamp of a wall-clock time.
pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A wall-clock time of a protobuf timestamp (negative ones clamp to the epoch).
pub fn system_time(t: &Timestamp) -> SystemTime {
    let secs = u64::try_from(t.seconds).unwrap_or(0);
    let nanos = u32::try_from(t.nanos).unwrap_or(0);
    UNIX_EPOCH + Duration::new(secs, nanos)
}

/// A UUID-shaped id, unique per agent: time, a sequence number and the packet's tuple.
fn flow_uuid(t: SystemTime, seq: u64, event: &DatapathEvent) -> String {
    let nanos = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    let tuple = (u64::from(event.src_port) << 16 | u64::from(event.dst_port))
        ^ u64::from(event.endpoint_id) << 32;
    // 8-4-4-4-12 hex digits, version 4 and variant 8 nibbles fixed; written by
    // hand because `format!` is a large part of building a flow.
    let groups: [(u64, usize); 5] = [
        (nanos >> 32, 8),
        ((nanos >> 16) & 0xffff, 4),
        (0x4000 | (nanos & 0xfff), 4),
        (0x8000 | (seq & 0xfff), 4),
        ((seq >> 12 ^ tuple) & 0xffff_ffff_ffff, 12),
    ];
    let mut out = String::with_capacity(36);
    for (i, (value, digits)) in groups.into_iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        for d in (0..digits).rev() {
            let nibble = ((value >> (d * 4)) & 0xf) as usize;
            out.push(char::from(b"0123456789abcdef"[nibble]));
        }
    }
    out
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
        let name = |code: i32| pb::DropReason::try_from(code).map(|r| r.as_str_name());
        assert_eq!(name(135), Ok("CT_TRUNCATED_OR_INVALID_HEADER"));
        assert_eq!(name(138), Ok("CT_CANNOT_CREATE_ENTRY_FROM_PACKET"));
        assert_eq!(name(155), Ok("CT_MAP_INSERTION_FAILED"));
        assert_eq!(name(158), Ok("SERVICE_BACKEND_NOT_FOUND"));
        assert_eq!(name(160), Ok("NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT"));
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_795_000_000, 5);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.000000005Z");
    }

    #[test]
    fn tcp_flags_become_hubbles_message() {
        let f = tcp_flags(0x12);
        assert!(f.syn && f.ack && !f.fin && !f.rst);
        assert_eq!(tcp_flags(0), pb::TcpFlags::default());
    }

    #[test]
    fn uuids_are_version_4_shaped() {
        let e = event(Verdict::Forwarded, Direction::FromEndpoint);
        let t = UNIX_EPOCH + Duration::new(1_795_000_000, 123_456_789);
        let id = flow_uuid(t, 0x12345, &e);
        let nanos = 1_795_000_000_123_456_789u64;
        let tuple = (40000u64 << 16 | 443) ^ 7u64 << 32;
        let expected = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            nanos >> 32,
            (nanos >> 16) & 0xffff,
            nanos & 0xfff,
            0x345,
            (0x12 ^ tuple) & 0xffff_ffff_ffff
        );
        assert_eq!(id, expected);
    }

    #[test]
    fn timestamps_round_trip() {
        let t = UNIX_EPOCH + Duration::new(1_795_000_000, 5);
        assert_eq!(system_time(&timestamp(t)), t);
    }

    struct Fake;
    impl Enricher for Fake {
        fn node_name(&self) -> &str {
            "node-1"
        }
        fn endpoint(&self, ip: IpAddr) -> Option<EndpointMeta> {
            (ip.to_string() == "10.200.1.5").then(|| EndpointMeta {
                id: 7,
                namespace: "shop".to_string(),
                pod_name: "web".to_string(),
                identity: 1234,
                labels: vec!["k8s:app=web".to_string()],
                node_name: "node-1".to_string(),
                workload: Some(("Deployment".to_string(), "web".to_string())),
            })
        }
        fn identity_labels(&self, identity: u32) -> Option<Vec<String>> {
            (identity == 2).then(|| vec!["reserved:world".to_string()])
        }
        fn policy(&self, id: u32) -> Option<PolicyInfo> {
            (id == 77).then(|| PolicyInfo::new("CiliumNetworkPolicy", Some("shop"), "web-out", 3))
        }
    }

    fn event(verdict: Verdict, direction: Direction) -> DatapathEvent {
        DatapathEvent {
            ktime_ns: 1,
            kind: EventKind::NewFlow,
            verdict,
            drop_reason: if verdict == Verdict::Dropped { 135 } else { 0 },
            direction,
            protocol: 6,
            src: "10.200.1.5".parse().expect("ip"),
            dst: "1.1.1.1".parse().expect("ip"),
            src_port: 40000,
            dst_port: 443,
            tcp_flags: 0x02,
            icmp_type: 0,
            icmp_code: 0,
            ifindex: 9,
            src_identity: 0,
            dst_identity: 2,
            endpoint_id: 7,
            is_reply: false,
            encrypted: false,
            packet_len: 60,
            policy_id: 0,
            policy_match: 0,
        }
    }

    #[test]
    fn policy_verdicts_and_deny_drops_name_their_policy() {
        let named = |f: &[pb::Policy]| {
            f.iter()
                .map(|p| format!("{} {}/{} r{}", p.kind, p.namespace, p.name, p.revision))
                .collect::<Vec<_>>()
        };
        let mut allowed = event(Verdict::Forwarded, Direction::FromEndpoint);
        allowed.kind = EventKind::PolicyVerdict;
        allowed.policy_id = 77;
        allowed.policy_match = 2;
        let f = enrich(&allowed, &Clock::now(), &Fake);
        assert_eq!(
            f.event_type,
            Some(pb::CiliumEventType {
                r#type: 5,
                sub_type: 0
            })
        );
        assert_eq!(f.r#type, pb::FlowType::L3L4 as i32);
        assert_eq!(f.verdict, pb::Verdict::Forwarded as i32);
        assert_eq!(f.policy_match_type, 2);
        assert_eq!(f.trace_observation_point, 0);
        assert_eq!(
            named(&f.egress_allowed_by),
            ["CiliumNetworkPolicy shop/web-out r3"]
        );
        assert!(f.ingress_allowed_by.is_empty() && f.egress_denied_by.is_empty());
        assert_eq!(
            f.egress_allowed_by[0].labels[0],
            "k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy"
        );

        let mut denied = event(Verdict::Dropped, Direction::ToEndpoint);
        denied.kind = EventKind::Drop;
        denied.drop_reason = 181;
        denied.policy_id = 77;
        let d = enrich(&denied, &Clock::now(), &Fake);
        assert_eq!(
            named(&d.ingress_denied_by),
            ["CiliumNetworkPolicy shop/web-out r3"]
        );
        assert_eq!(d.drop_reason_desc, pb::DropReason::PolicyDeny as i32);
        assert!(d.ingress_allowed_by.is_empty());

        // Default deny names no policy (and keeps 133); unknown ids name nothing.
        denied.drop_reason = 133;
        denied.policy_id = 0;
        let d = enrich(&denied, &Clock::now(), &Fake);
        assert!(d.ingress_denied_by.is_empty());
        assert_eq!(d.drop_reason_desc, pb::DropReason::PolicyDenied as i32);
        allowed.policy_id = 78;
        assert!(
            enrich(&allowed, &Clock::now(), &Fake)
                .egress_allowed_by
                .is_empty()
        );

        // Audit: verdict AUDIT, no drop reason; an audited deny rule is named.
        let mut audited = allowed.clone();
        audited.verdict = Verdict::Audit;
        audited.drop_reason = 181;
        audited.policy_id = 77;
        let a = enrich(&audited, &Clock::now(), &Fake);
        assert_eq!(a.verdict, pb::Verdict::Audit as i32);
        assert_eq!(a.drop_reason_desc, 0);
        assert_eq!(
            named(&a.egress_denied_by),
            ["CiliumNetworkPolicy shop/web-out r3"]
        );
    }

    #[test]
    fn events_become_hubble_flows() {
        let f = enrich(
            &event(Verdict::Forwarded, Direction::FromEndpoint),
            &Clock::now(),
            &Fake,
        );
        assert_eq!(f.verdict, pb::Verdict::Forwarded as i32);
        assert_eq!(f.drop_reason_desc, 0);
        let src = f.source.clone().expect("source");
        assert_eq!(
            (src.pod_name.as_str(), src.identity, src.id),
            ("web", 1234, 7)
        );
        assert_eq!(src.workloads[0].kind, "Deployment");
        let dst = f.destination.clone().expect("destination");
        assert_eq!(dst.labels, vec!["reserved:world"]);
        assert_eq!(f.traffic_direction, pb::TrafficDirection::Egress as i32);
        assert_eq!(
            f.trace_observation_point,
            pb::TraceObservationPoint::FromEndpoint as i32
        );
        assert_eq!(
            f.event_type,
            Some(pb::CiliumEventType {
                r#type: 4,
                sub_type: 5
            })
        );
        assert_eq!(f.interface.as_ref().map(|i| i.index), Some(9));
        assert!(matches!(
            f.l4.and_then(|l| l.protocol),
            Some(Protocol::Tcp(pb::Tcp {
                destination_port: 443,
                flags: Some(pb::TcpFlags {
                    syn: true,
                    ack: false,
                    ..
                }),
                ..
            }))
        ));
        assert_eq!(f.uuid.len(), 36);

        let d = enrich(
            &event(Verdict::Dropped, Direction::FromEndpoint),
            &Clock::now(),
            &Fake,
        );
        assert_eq!(d.verdict, pb::Verdict::Dropped as i32);
        assert_eq!(d.drop_reason, 135);
        assert_eq!(
            d.drop_reason_desc,
            pb::DropReason::CtTruncatedOrInvalidHeader as i32
        );
        assert_eq!(
            d.event_type,
            Some(pb::CiliumEventType {
                r#type: 1,
                sub_type: 135
            })
        );
        assert_ne!(d.uuid, f.uuid);
    }
}
