//! One line of the page's flow table, made from a flow on the server.

use hubble_proto::flow::layer7::Record;
use hubble_proto::flow::{Flow, L7FlowType, Verdict};
use serde::Serialize;

use super::graph::{drop_reason, flow_ms, node_of, protocol_port};

/// A flow as the table shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowRow {
    /// Wall-clock time of the flow (ms since the epoch).
    pub time_ms: i64,
    /// The map nodes of both sides (what clicking a node filters on).
    pub source_node: String,
    pub target_node: String,
    /// `namespace/pod` or the entity, with the address for entities.
    pub source: String,
    pub destination: String,
    /// `5432/TCP`, or the protocol alone.
    pub port: String,
    /// Hubble's verdict name (`FORWARDED`, `DROPPED`, ...).
    pub verdict: String,
    pub drop_reason: String,
    /// `GET /metrics -> 200 (3 ms)` for L7 flows.
    pub l7: String,
    pub is_reply: bool,
    pub node_name: String,
    /// The map edge of the flow (empty for replies and flows not on the map).
    pub edge: String,
}

impl FlowRow {
    /// The row of `flow`; `edge` is the map edge it was counted in.
    pub fn new(flow: &Flow, edge: Option<String>) -> Self {
        let side = |ep: Option<&hubble_proto::flow::Endpoint>, ip: &str| match ep {
            Some(e) if !e.pod_name.is_empty() => {
                (node_of(e).id, format!("{}/{}", e.namespace, e.pod_name))
            }
            Some(e) => {
                let node = node_of(e).id;
                let shown = if ip.is_empty() {
                    node.clone()
                } else {
                    format!("{node} ({ip})")
                };
                (node, shown)
            }
            None => (String::new(), ip.to_owned()),
        };
        let ip = flow.ip.clone().unwrap_or_default();
        let (source_node, source) = side(flow.source.as_ref(), &ip.source);
        let (target_node, destination) = side(flow.destination.as_ref(), &ip.destination);
        let (protocol, port) = protocol_port(flow);
        Self {
            time_ms: flow_ms(flow),
            source_node,
            target_node,
            source,
            destination,
            port: if port == 0 {
                protocol.to_owned()
            } else {
                format!("{port}/{protocol}")
            },
            verdict: Verdict::try_from(flow.verdict)
                .map(|v| v.as_str_name().to_owned())
                .unwrap_or_default(),
            drop_reason: drop_reason(flow),
            l7: l7_summary(flow),
            is_reply: flow.is_reply.as_ref().is_some_and(|r| r.value),
            node_name: flow.node_name.clone(),
            edge: edge.unwrap_or_default(),
        }
    }
}

/// `GET http://x/metrics` for a request, `200 (3 ms)` added for a response.
fn l7_summary(flow: &Flow) -> String {
    let Some(l7) = &flow.l7 else {
        return String::new();
    };
    let Some(Record::Http(http)) = &l7.record else {
        return String::new();
    };
    if l7.r#type == L7FlowType::Response as i32 {
        format!(
            "{} {} -> {} ({} ms)",
            http.method,
            http.url,
            http.code,
            l7.latency_ns / 1_000_000
        )
    } else {
        format!("{} {}", http.method, http.url)
    }
}

#[cfg(test)]
mod tests {
    use hubble_proto::flow::layer4::Protocol;
    use hubble_proto::flow::{Endpoint, Http, Ip, Layer4, Layer7, Udp};

    use super::*;

    #[test]
    fn a_drop_to_the_world_and_an_http_response() {
        let flow = Flow {
            verdict: Verdict::Dropped as i32,
            drop_reason: 133,
            drop_reason_desc: 133,
            ip: Some(Ip {
                source: "10.200.1.3".into(),
                destination: "1.1.1.1".into(),
                ..Ip::default()
            }),
            source: Some(Endpoint {
                namespace: "payments".into(),
                pod_name: "api-1".into(),
                labels: vec!["k8s:app=api".into()],
                identity: 300,
                ..Endpoint::default()
            }),
            destination: Some(Endpoint {
                identity: 2,
                ..Endpoint::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(Protocol::Udp(Udp {
                    source_port: 5000,
                    destination_port: 53,
                })),
            }),
            ..Flow::default()
        };
        let row = FlowRow::new(&flow, None);
        assert_eq!(row.source, "payments/api-1");
        assert_eq!(row.source_node, "payments/api");
        assert_eq!(row.destination, "world (1.1.1.1)");
        assert_eq!(row.port, "53/UDP");
        assert_eq!(row.verdict, "DROPPED");
        assert_eq!(row.drop_reason, "POLICY_DENIED");

        let response = Flow {
            l7: Some(Layer7 {
                r#type: L7FlowType::Response as i32,
                latency_ns: 3_000_000,
                record: Some(Record::Http(Http {
                    code: 200,
                    method: "GET".into(),
                    url: "http://admin/metrics".into(),
                    ..Http::default()
                })),
            }),
            ..Flow::default()
        };
        assert_eq!(
            l7_summary(&response),
            "GET http://admin/metrics -> 200 (3 ms)"
        );
    }
}
