//! Hubble's compact one-line format:
//! `Nov 26 05:40:01.123: payments/payments-api:41234 (ID:1234) -> kube-system/coredns:53 (ID:5678) to-endpoint FORWARDED (UDP)`

use crate::flow::{Flow, FlowEndpoint, L4};

/// One flow as `hubble observe` prints it by default.
pub fn format_compact(flow: &Flow) -> String {
    let (sport, dport, proto) = match &flow.l4 {
        L4::Tcp {
            source_port,
            destination_port,
            flags,
        } => (
            Some(*source_port),
            Some(*destination_port),
            if flags.is_empty() {
                "TCP".to_string()
            } else {
                format!("TCP Flags: {}", flags.join(", "))
            },
        ),
        L4::Udp {
            source_port,
            destination_port,
        } => (
            Some(*source_port),
            Some(*destination_port),
            "UDP".to_string(),
        ),
        L4::IcmpV4 { r#type, code } => (None, None, format!("ICMPv4 type {type} code {code}")),
        L4::IcmpV6 { r#type, code } => (None, None, format!("ICMPv6 type {type} code {code}")),
        L4::Other { protocol } => (None, None, format!("IP proto {protocol}")),
    };
    let verdict = match &flow.drop_reason_desc {
        Some(reason) if flow.verdict == "DROPPED" => format!("DROPPED ({reason})"),
        _ => flow.verdict.clone(),
    };
    let reply = if flow.is_reply { " (reply)" } else { "" };
    format!(
        "{}: {} -> {} {}{} {} ({})",
        short_time(&flow.time),
        side(&flow.source, &flow.ip.source.to_string(), sport),
        side(&flow.destination, &flow.ip.destination.to_string(), dport),
        flow.event,
        reply,
        verdict,
        proto
    )
}

fn side(ep: &FlowEndpoint, ip: &str, port: Option<u16>) -> String {
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
    use super::*;
    use crate::flow::FlowIp;

    fn sample() -> Flow {
        Flow {
            time: "2026-11-26T05:40:01.123456789Z".to_string(),
            verdict: "FORWARDED".to_string(),
            drop_reason: 0,
            drop_reason_desc: None,
            ip: FlowIp {
                source: "10.200.1.5".parse().expect("ip"),
                destination: "10.200.2.7".parse().expect("ip"),
                ip_version: "IPv4".to_string(),
            },
            l4: L4::Udp {
                source_port: 41234,
                destination_port: 53,
            },
            source: FlowEndpoint {
                id: 12,
                identity: 1234,
                namespace: "payments".to_string(),
                labels: vec![],
                pod_name: "payments-api".to_string(),
            },
            destination: FlowEndpoint {
                id: 0,
                identity: 5678,
                namespace: "kube-system".to_string(),
                labels: vec![],
                pod_name: "coredns".to_string(),
            },
            flow_type: "L3_L4".to_string(),
            node_name: "node-1".to_string(),
            event: "to-endpoint".to_string(),
            traffic_direction: "INGRESS".to_string(),
            trace_observation_point: "TO_ENDPOINT".to_string(),
            is_reply: false,
            interface_index: 7,
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
        f.verdict = "DROPPED".to_string();
        f.drop_reason_desc = Some("CT_TRUNCATED_OR_INVALID_HEADER".to_string());
        f.destination.pod_name.clear();
        let line = format_compact(&f);
        assert!(line.contains("-> 10.200.2.7:53 (ID:5678)"), "{line}");
        assert!(
            line.contains("DROPPED (CT_TRUNCATED_OR_INVALID_HEADER)"),
            "{line}"
        );
    }
}
