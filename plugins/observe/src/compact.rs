//! Hubble's compact one-line format:
//! `Nov 26 05:40:01.123: payments/payments-api:41234 (ID:1234) -> kube-system/coredns:53 (ID:5678) to-endpoint FORWARDED (UDP)`

use hubble_proto::flow::layer4::Protocol;
use hubble_proto::flow::{DropReason, Endpoint, Flow, Verdict};

use std::borrow::Cow;

use hubble_proto::flow::TrafficDirection;

use crate::flow::{
    MESSAGE_TYPE_DROP, MESSAGE_TYPE_POLICY_VERDICT, MESSAGE_TYPE_TRACE, TRACE_FROM_LXC,
    TRACE_TO_LXC,
};
use crate::flow::{rfc3339, system_time};
use crate::metrics::match_type_name;

/// One flow as `hubble observe` prints it by default.
pub fn format_compact(flow: &Flow) -> String {
    let (sport, dport, proto) = match flow.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Tcp(t)) => {
            let names = flag_names(t.flags.unwrap_or_default());
            (
                Some(t.source_port),
                Some(t.destination_port),
                if names.is_empty() {
                    "TCP".to_string()
                } else {
                    format!("TCP Flags: {}", names.join(", "))
                },
            )
        }
        Some(Protocol::Udp(u)) => (
            Some(u.source_port),
            Some(u.destination_port),
            "UDP".to_string(),
        ),
        Some(Protocol::Sctp(s)) => (
            Some(s.source_port),
            Some(s.destination_port),
            "SCTP".to_string(),
        ),
        Some(Protocol::IcmPv4(i)) => (
            None,
            None,
            format!("ICMPv4 type {} code {}", i.r#type, i.code),
        ),
        Some(Protocol::IcmPv6(i)) => (
            None,
            None,
            format!("ICMPv6 type {} code {}", i.r#type, i.code),
        ),
        None => (None, None, "unknown L4".to_string()),
    };
    let verdict_name = Verdict::try_from(flow.verdict)
        .map(|v| v.as_str_name())
        .unwrap_or("UNKNOWN");
    let http = http_summary(flow);
    let proto = http.clone().unwrap_or(proto);
    let policy_verdict = flow
        .event_type
        .as_ref()
        .is_some_and(|e| e.r#type == MESSAGE_TYPE_POLICY_VERDICT);
    let verdict = if policy_verdict {
        // Hubble's words for policy verdicts.
        match Verdict::try_from(flow.verdict) {
            Ok(Verdict::Forwarded | Verdict::Redirected) => "ALLOWED",
            Ok(Verdict::Dropped | Verdict::Error) => "DENIED",
            Ok(Verdict::Audit) => "AUDITED",
            _ => verdict_name,
        }
        .to_string()
    } else if flow.verdict == Verdict::Dropped as i32 && http.is_none() {
        let reason = DropReason::try_from(flow.drop_reason_desc)
            .map(|r| r.as_str_name())
            .unwrap_or("DROP_REASON_UNKNOWN");
        format!("DROPPED ({reason})")
    } else {
        verdict_name.to_string()
    };
    let reply = if flow.is_reply.is_some_and(|r| r.value) {
        " (reply)"
    } else {
        ""
    };
    let ip = flow.ip.clone().unwrap_or_default();
    let time = flow
        .time
        .as_ref()
        .map(|t| rfc3339(system_time(t)))
        .unwrap_or_default();
    format!(
        "{}: {} -> {} {}{} {} ({})",
        short_time(&time),
        side(&flow.source.clone().unwrap_or_default(), &ip.source, sport),
        side(
            &flow.destination.clone().unwrap_or_default(),
            &ip.destination,
            dport
        ),
        event_name(flow),
        reply,
        verdict,
        proto
    )
}

/// Hubble's L7 summary: `HTTP/1.1 GET http://h/p`, or for a response
/// `HTTP/1.1 403 2ms (POST http://h/p)`; DNS: `DNS Query a.example. A`, or for a response
/// `DNS Answer "192.0.2.1" TTL: 30 (Proxy a.example. A)` (`RCode: Query Refused` instead
/// of the addresses when the rcode is not 0).
fn http_summary(flow: &Flow) -> Option<String> {
    use hubble_proto::flow::{L7FlowType, layer7::Record};
    let l7 = flow.l7.as_ref()?;
    let response = l7.r#type == L7FlowType::Response as i32;
    let h = match l7.record.as_ref()? {
        Record::Http(h) => h,
        Record::Dns(d) => {
            let qtypes = d.qtypes.join(",");
            return Some(if !response {
                format!("DNS Query {} {qtypes}", d.query)
            } else if d.rcode == 0 {
                format!(
                    "DNS Answer {:?} TTL: {} (Proxy {} {qtypes})",
                    d.ips.join(","),
                    d.ttl,
                    d.query
                )
            } else {
                format!(
                    "DNS Answer RCode: {} TTL: {} (Proxy {} {qtypes})",
                    crate::metrics::rcode_name(d.rcode),
                    d.ttl,
                    d.query
                )
            });
        }
    };
    Some(if response {
        format!(
            "{} {} {}ms ({} {})",
            h.protocol,
            h.code,
            l7.latency_ns / 1_000_000,
            h.method,
            h.url
        )
    } else {
        format!("{} {} {}", h.protocol, h.method, h.url)
    })
}

/// Hubble's word for the event: `to-endpoint`, `from-endpoint`, `drop`,
/// `policy-verdict:L3-L4 EGRESS`, ...
pub fn event_name(flow: &Flow) -> Cow<'static, str> {
    if let Some(e) = flow.event_type.as_ref()
        && e.r#type == MESSAGE_TYPE_POLICY_VERDICT
    {
        let direction = TrafficDirection::try_from(flow.traffic_direction)
            .unwrap_or(TrafficDirection::Unknown)
            .as_str_name();
        return Cow::Owned(format!(
            "policy-verdict:{} {direction}",
            match_type_name(flow.policy_match_type)
        ));
    }
    Cow::Borrowed(trace_or_drop_name(flow))
}

fn trace_or_drop_name(flow: &Flow) -> &'static str {
    use hubble_proto::flow::{L7FlowType, layer7::Record};
    if let Some(l7) = flow.l7.as_ref() {
        let response = l7.r#type == L7FlowType::Response as i32;
        return match (l7.record.as_ref(), response) {
            (Some(Record::Dns(_)), true) => "dns-response",
            (Some(Record::Dns(_)), false) => "dns-request",
            (_, true) => "http-response",
            (_, false) => "http-request",
        };
    }
    match flow.event_type.as_ref().map(|e| (e.r#type, e.sub_type)) {
        Some((MESSAGE_TYPE_DROP, _)) => "drop",
        Some((MESSAGE_TYPE_TRACE, TRACE_TO_LXC)) => "to-endpoint",
        Some((MESSAGE_TYPE_TRACE, TRACE_FROM_LXC)) => "from-endpoint",
        Some((MESSAGE_TYPE_TRACE, _)) => "trace",
        _ => "unknown",
    }
}

fn flag_names(f: hubble_proto::flow::TcpFlags) -> Vec<&'static str> {
    [
        (f.syn, "SYN"),
        (f.ack, "ACK"),
        (f.fin, "FIN"),
        (f.rst, "RST"),
        (f.psh, "PSH"),
        (f.urg, "URG"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect()
}

fn side(ep: &Endpoint, ip: &str, port: Option<u32>) -> String {
    let name = if ep.pod_name.is_empty() {
        ip.to_string()
    } else {
        format!("{}/{}", ep.namespace, ep.pod_name)
    };
    let name = match port {
        Some(p) => format!("{name}:{p}"),
        None => name,
    };
    format!("{name} (ID:{})", ep.identity)
}

/// `2026-11-26T05:40:01.123456789Z` -> `Nov 26 05:40:01.123`.
fn short_time(rfc: &str) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = rfc
        .get(5..7)
        .and_then(|m| m.parse::<usize>().ok())
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
        .copied()
        .unwrap_or("???");
    let day = rfc.get(8..10).unwrap_or("??");
    let clock = rfc.get(11..23).unwrap_or("??:??:??.???");
    format!("{month} {day} {clock}")
}

#[cfg(test)]
mod tests {
    use hubble_proto::Timestamp;
    use hubble_proto::flow::{CiliumEventType, Ip, Layer4, Udp};

    use super::*;

    fn sample() -> Flow {
        Flow {
            // 2026-11-26T05:40:01.123456789Z
            time: Some(Timestamp {
                seconds: 1_795_671_601,
                nanos: 123_456_789,
            }),
            verdict: Verdict::Forwarded as i32,
            ip: Some(Ip {
                source: "10.200.1.5".to_string(),
                destination: "10.200.2.7".to_string(),
                ..Ip::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(Protocol::Udp(Udp {
                    source_port: 41234,
                    destination_port: 53,
                })),
            }),
            source: Some(Endpoint {
                id: 12,
                identity: 1234,
                namespace: "payments".to_string(),
                pod_name: "payments-api".to_string(),
                ..Endpoint::default()
            }),
            destination: Some(Endpoint {
                identity: 5678,
                namespace: "kube-system".to_string(),
                pod_name: "coredns".to_string(),
                ..Endpoint::default()
            }),
            node_name: "node-1".to_string(),
            event_type: Some(CiliumEventType {
                r#type: MESSAGE_TYPE_TRACE,
                sub_type: TRACE_TO_LXC,
            }),
            ..Flow::default()
        }
    }

    #[test]
    fn compact_line_reads_like_hubble() {
        assert_eq!(
            format_compact(&sample()),
            "Nov 26 05:40:01.123: payments/payments-api:41234 (ID:1234) -> kube-system/coredns:53 (ID:5678) to-endpoint FORWARDED (UDP)"
        );
    }

    #[test]
    fn drops_show_their_reason_and_unknown_peers_their_ip() {
        let mut f = sample();
        f.verdict = Verdict::Dropped as i32;
        f.drop_reason_desc = DropReason::CtTruncatedOrInvalidHeader as i32;
        f.event_type = Some(CiliumEventType {
            r#type: MESSAGE_TYPE_DROP,
            sub_type: 135,
        });
        if let Some(d) = f.destination.as_mut() {
            d.pod_name.clear();
        }
        let line = format_compact(&f);
        assert!(line.contains("-> 10.200.2.7:53 (ID:5678) drop"), "{line}");
        assert!(
            line.contains("DROPPED (CT_TRUNCATED_OR_INVALID_HEADER)"),
            "{line}"
        );
    }

    #[test]
    fn policy_verdicts_read_like_hubble() {
        let mut f = sample();
        f.event_type = Some(CiliumEventType {
            r#type: MESSAGE_TYPE_POLICY_VERDICT,
            sub_type: 0,
        });
        f.traffic_direction = TrafficDirection::Egress as i32;
        f.policy_match_type = 2;
        let line = format_compact(&f);
        assert!(
            line.ends_with("policy-verdict:L3-L4 EGRESS ALLOWED (UDP)"),
            "{line}"
        );
        f.verdict = Verdict::Audit as i32;
        f.policy_match_type = 0;
        f.traffic_direction = TrafficDirection::Ingress as i32;
        let line = format_compact(&f);
        assert!(
            line.ends_with("policy-verdict:none INGRESS AUDITED (UDP)"),
            "{line}"
        );
    }

    #[test]
    fn http_flows_read_like_hubble() {
        use hubble_proto::flow::{Http, L7FlowType, Layer7, layer7::Record};
        let mut f = sample();
        f.verdict = Verdict::Dropped as i32;
        f.l7 = Some(Layer7 {
            r#type: L7FlowType::Response as i32,
            latency_ns: 3_000_000,
            record: Some(Record::Http(Http {
                code: 403,
                method: "POST".into(),
                url: "http://admin:8080/metrics".into(),
                protocol: "HTTP/1.1".into(),
                headers: vec![],
            })),
        });
        let line = format_compact(&f);
        assert!(
            line.ends_with(
                "http-response DROPPED (HTTP/1.1 403 3ms (POST http://admin:8080/metrics))"
            ),
            "{line}"
        );
    }

    #[test]
    fn dns_flows_read_like_hubble() {
        use hubble_proto::flow::{Dns, L7FlowType, Layer7, layer7::Record};
        let mut f = sample();
        let dns = Dns {
            query: "api.example.com.".into(),
            ips: vec!["192.0.2.1".into()],
            ttl: 30,
            qtypes: vec!["A".into()],
            ..Dns::default()
        };
        f.l7 = Some(Layer7 {
            r#type: L7FlowType::Response as i32,
            latency_ns: 0,
            record: Some(Record::Dns(dns.clone())),
        });
        let line = format_compact(&f);
        assert!(
            line.ends_with(
                "dns-response FORWARDED (DNS Answer \"192.0.2.1\" TTL: 30 (Proxy api.example.com. A))"
            ),
            "{line}"
        );
        f.l7 = Some(Layer7 {
            r#type: L7FlowType::Request as i32,
            latency_ns: 0,
            record: Some(Record::Dns(Dns { rcode: 5, ..dns })),
        });
        let line = format_compact(&f);
        assert!(
            line.ends_with("dns-request FORWARDED (DNS Query api.example.com. A)"),
            "{line}"
        );
    }
}
