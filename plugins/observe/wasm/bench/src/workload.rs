//! The benchmark's flows: datapath events between pods of the seed article's
//! namespaces, enriched as the agent does, and the real filter's native twin.

use std::net::{IpAddr, Ipv4Addr};

use hubble_proto::flow::{Flow, Verdict, layer4::Protocol};
use porin_observe::flow::Enricher;
use porin_plugin_sdk::flow::{Direction, EventKind, Verdict as EventVerdict};
use porin_plugin_sdk::{DatapathEvent, EndpointMeta};

const NAMESPACES: [&str; 4] = ["payments", "kube-system", "monitoring", "ops"];

/// Pods `10.200.1.<n>`, in namespace `NAMESPACES[n % 4]`.
pub struct BenchEnricher;

impl BenchEnricher {
    pub fn new() -> Self {
        Self
    }
}

impl Enricher for BenchEnricher {
    fn node_name(&self) -> &str {
        "node-1"
    }
    fn endpoint(&self, ip: IpAddr) -> Option<EndpointMeta> {
        let IpAddr::V4(v4) = ip else { return None };
        let n = v4.octets()[3] as usize;
        let ns = NAMESPACES[n % NAMESPACES.len()];
        let app = format!("app-{n}");
        Some(EndpointMeta {
            id: n as u32,
            namespace: ns.to_string(),
            pod_name: format!("{app}-7d9f8c6b5-x2x{n}"),
            identity: 10_000 + n as u32,
            labels: vec![
                format!("k8s:app={app}"),
                format!("k8s:io.kubernetes.pod.namespace={ns}"),
                "k8s:io.cilium.k8s.policy.serviceaccount=default".to_string(),
            ],
            node_name: "node-1".to_string(),
            workload: Some(("Deployment".to_string(), app)),
        })
    }
    fn identity_labels(&self, _identity: u32) -> Option<Vec<String>> {
        None
    }
}

/// `n` events: new TCP connections between pods, one in 16 dropped, a
/// quarter to port 8080.
pub fn events(n: usize) -> Vec<DatapathEvent> {
    (0..n)
        .map(|i| {
            let dropped = i % 16 == 0;
            DatapathEvent {
                ktime_ns: 1_000_000 + i as u64,
                kind: if dropped {
                    EventKind::Drop
                } else {
                    EventKind::NewFlow
                },
                verdict: if dropped {
                    EventVerdict::Dropped
                } else {
                    EventVerdict::Forwarded
                },
                drop_reason: if dropped { 133 } else { 0 },
                direction: Direction::FromEndpoint,
                protocol: 6,
                src: IpAddr::V4(Ipv4Addr::new(10, 200, 1, (i % 50) as u8 + 2)),
                dst: IpAddr::V4(Ipv4Addr::new(10, 200, 1, (i % 7) as u8 + 60)),
                src_port: 40_000 + i as u16,
                dst_port: if i % 4 == 0 { 8080 } else { 5432 },
                tcp_flags: 0x02,
                icmp_type: 0,
                icmp_code: 0,
                ifindex: 7,
                src_identity: 10_000,
                dst_identity: 10_001,
                endpoint_id: 1,
                is_reply: false,
                encrypted: false,
                packet_len: 60,
                policy_id: 0,
                policy_match: 0,
            }
        })
        .collect()
}

/// The real filter (`examples/wasm/bench/real-filter`) compiled natively.
pub fn native_keep(flow: &Flow) -> bool {
    let namespace = flow
        .destination
        .as_ref()
        .map(|d| d.namespace.as_str())
        .unwrap_or_default();
    let port = match flow.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Tcp(t)) => t.destination_port,
        Some(Protocol::Udp(u)) => u.destination_port,
        _ => 0,
    };
    flow.verdict == Verdict::Dropped as i32 || (namespace != "kube-system" && port != 8080)
}
