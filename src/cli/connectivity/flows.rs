//! What Porin reports about a scenario's traffic: flows read back through the Hubble
//! API of every node (GetFlows, as `porin observe` does), matched against what the
//! scenario expects (verdict, drop reason, encryption, HTTP status).

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use porin_observe::hubble_proto::Timestamp;
use porin_observe::hubble_proto::flow::{DropReason, Flow, Verdict, layer4, layer7};
use porin_observe::hubble_proto::observer::GetFlowsRequest;
use porin_observe::hubble_proto::observer::get_flows_response::ResponseTypes;
use porin_observe::{HubbleAddress, format_compact};

use crate::cli::discover::AgentTarget;

/// How long flows may take to reach the Hubble API after the traffic.
const FLOW_WAIT: Duration = Duration::from_secs(5);

/// What a scenario expects to find among the flows.
#[derive(Debug, Clone, Default)]
pub struct FlowExpectation {
    pub source_ip: Option<String>,
    /// The source address starts with this (e.g. the underlay's `192.168.200.`).
    pub source_prefix: Option<String>,
    pub destination_ip: Option<String>,
    pub destination_pod: Option<String>,
    pub destination_port: Option<u16>,
    pub verdict: Option<Verdict>,
    pub drop_reason: Option<DropReason>,
    /// Flows on this node only.
    pub node: Option<String>,
    pub encrypted: Option<bool>,
    /// An L7 HTTP flow whose URL contains this.
    pub http_url: Option<String>,
}

impl FlowExpectation {
    fn matches(&self, flow: &Flow) -> bool {
        let ip = flow.ip.as_ref();
        let src = ip.map(|i| i.source.as_str()).unwrap_or("");
        let dst = ip.map(|i| i.destination.as_str()).unwrap_or("");
        let dst_pod = flow
            .destination
            .as_ref()
            .map(|e| e.pod_name.as_str())
            .unwrap_or("");
        let http_url = match flow.l7.as_ref().and_then(|l| l.record.as_ref()) {
            Some(layer7::Record::Http(http)) => Some(http.url.as_str()),
            _ => None,
        };
        self.source_ip.as_deref().is_none_or(|s| s == src)
            && self
                .source_prefix
                .as_deref()
                .is_none_or(|p| src.starts_with(p))
            && self.destination_ip.as_deref().is_none_or(|d| d == dst)
            && self.destination_pod.as_deref().is_none_or(|p| p == dst_pod)
            && self
                .destination_port
                .is_none_or(|p| destination_port(flow) == Some(p))
            && self.verdict.is_none_or(|v| flow.verdict == v as i32)
            && self
                .drop_reason
                .is_none_or(|r| flow.drop_reason_desc == r as i32)
            && self.node.as_deref().is_none_or(|n| n == flow.node_name)
            && self
                .encrypted
                .is_none_or(|e| ip.is_some_and(|i| i.encrypted == e))
            && self
                .http_url
                .as_deref()
                .is_none_or(|u| http_url.is_some_and(|url| url.contains(u)))
    }

    /// The expectation in words, for reports.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(v) = self.verdict {
            parts.push(v.as_str_name().to_string());
        }
        if let Some(r) = self.drop_reason {
            parts.push(format!("({})", r.as_str_name()));
        }
        if self.encrypted == Some(true) {
            parts.push("encrypted".to_string());
        }
        if let Some(u) = &self.http_url {
            parts.push(format!("L7 HTTP {u}"));
        }
        if let Some(n) = &self.node {
            parts.push(format!("on {n}"));
        }
        parts.join(" ")
    }
}

/// The flows' destination port (TCP or UDP).
fn destination_port(flow: &Flow) -> Option<u16> {
    match flow.l4.as_ref()?.protocol.as_ref()? {
        layer4::Protocol::Tcp(t) => u16::try_from(t.destination_port).ok(),
        layer4::Protocol::Udp(u) => u16::try_from(u.destination_port).ok(),
        _ => None,
    }
}

/// A flow in Hubble's compact format, for messages.
pub fn describe(flow: &Flow) -> String {
    format_compact(flow)
}

/// The Hubble API of every node (its agent's socket), labelled by node.
fn servers_of(targets: &[AgentTarget]) -> Vec<(String, HubbleAddress)> {
    targets
        .iter()
        .map(|t| (t.node.clone(), HubbleAddress::Unix(t.hubble_socket.clone())))
        .collect()
}

/// Every node's flows since `since`.
pub async fn collect(targets: &[AgentTarget], since: SystemTime) -> Result<Vec<Flow>> {
    collect_from(&servers_of(targets), since).await
}

/// The flows since `since` of every Hubble server (agents, or one relay), each labelled
/// for messages.
pub async fn collect_from(
    servers: &[(String, HubbleAddress)],
    since: SystemTime,
) -> Result<Vec<Flow>> {
    let since = since
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let request = GetFlowsRequest {
        number: 20_000,
        since: Some(Timestamp {
            seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
        }),
        ..GetFlowsRequest::default()
    };
    let mut flows = Vec::new();
    for (label, server) in servers {
        let mut client = server
            .observer_with(None)
            .await
            .with_context(|| format!("the Hubble API of {label}"))?;
        let mut stream = client
            .get_flows(request.clone())
            .await
            .with_context(|| format!("GetFlows on {label}"))?
            .into_inner();
        while let Some(response) = stream
            .message()
            .await
            .with_context(|| format!("reading flows of {label}"))?
        {
            if let Some(ResponseTypes::Flow(flow)) = response.response_types {
                flows.push(flow);
            }
        }
    }
    Ok(flows)
}

/// Waits for a flow matching `expected` among the flows since `since`; on failure the
/// error lists the flows that involve `related` (an address), so the report shows what
/// Porin did see.
pub async fn expect(
    targets: &[AgentTarget],
    since: SystemTime,
    expected: &FlowExpectation,
    related: &str,
) -> Result<Flow, String> {
    expect_from(&servers_of(targets), since, expected, related).await
}

/// [`expect`] against any Hubble servers (e.g. Hubble Relay).
pub async fn expect_from(
    servers: &[(String, HubbleAddress)],
    since: SystemTime,
    expected: &FlowExpectation,
    related: &str,
) -> Result<Flow, String> {
    let deadline = Instant::now() + FLOW_WAIT;
    loop {
        let flows = collect_from(servers, since)
            .await
            .map_err(|e| format!("{e:#}"))?;
        if let Some(flow) = flows.iter().find(|f| expected.matches(f)) {
            return Ok(flow.clone());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no {} flow; flows of {related}: {}",
                expected.describe(),
                summarize(&flows, related)
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The drops of `source` → `destination` (to `port`, when given) since `since`: what
/// explains a failure.
pub async fn drops_between(
    targets: &[AgentTarget],
    since: SystemTime,
    source: &str,
    destination: &str,
    port: Option<u16>,
) -> Vec<Flow> {
    let expected = FlowExpectation {
        source_ip: Some(source.to_string()),
        destination_ip: Some(destination.to_string()),
        destination_port: port,
        verdict: Some(Verdict::Dropped),
        ..FlowExpectation::default()
    };
    collect(targets, since)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|f| expected.matches(f))
        .collect()
}

/// The flows involving `address`, compact, at most a few.
pub fn summarize(flows: &[Flow], address: &str) -> String {
    let related: Vec<String> = flows
        .iter()
        .filter(|f| {
            f.ip.as_ref()
                .is_some_and(|i| i.source == address || i.destination == address)
                || address.is_empty()
        })
        .take(6)
        .map(describe)
        .collect();
    if related.is_empty() {
        "none".to_string()
    } else {
        related.join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use porin_observe::hubble_proto::flow::{Http, Ip, Layer4, Layer7, Tcp};

    use super::*;

    fn tcp_flow(src: &str, dst: &str, port: u32, verdict: Verdict, reason: DropReason) -> Flow {
        Flow {
            ip: Some(Ip {
                source: src.to_string(),
                destination: dst.to_string(),
                ..Ip::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(layer4::Protocol::Tcp(Tcp {
                    destination_port: port,
                    ..Tcp::default()
                })),
            }),
            verdict: verdict as i32,
            drop_reason_desc: reason as i32,
            node_name: "node-2".to_string(),
            ..Flow::default()
        }
    }

    #[test]
    fn a_drop_matches_only_with_its_reason_port_and_node() {
        let drop = tcp_flow(
            "10.0.0.1",
            "10.0.0.2",
            8080,
            Verdict::Dropped,
            DropReason::PolicyDeny,
        );
        let mut want = FlowExpectation {
            source_ip: Some("10.0.0.1".into()),
            destination_ip: Some("10.0.0.2".into()),
            destination_port: Some(8080),
            verdict: Some(Verdict::Dropped),
            drop_reason: Some(DropReason::PolicyDeny),
            node: Some("node-2".into()),
            ..FlowExpectation::default()
        };
        assert!(want.matches(&drop));
        assert_eq!(want.describe(), "DROPPED (POLICY_DENY) on node-2");
        want.drop_reason = Some(DropReason::PolicyDenied);
        assert!(!want.matches(&drop), "another reason");
        want.drop_reason = Some(DropReason::PolicyDeny);
        want.destination_port = Some(53);
        assert!(!want.matches(&drop), "another port");
        want.destination_port = Some(8080);
        want.node = Some("node-1".into());
        assert!(!want.matches(&drop), "another node");
    }

    #[test]
    fn l7_expectations_need_an_http_record_with_the_path() {
        let mut flow = tcp_flow("a", "b", 8080, Verdict::Dropped, DropReason::Unknown);
        let want = FlowExpectation {
            http_url: Some("/private.txt".into()),
            verdict: Some(Verdict::Dropped),
            ..FlowExpectation::default()
        };
        assert!(!want.matches(&flow), "an L3/L4 drop is not the L7 one");
        flow.l7 = Some(Layer7 {
            record: Some(layer7::Record::Http(Http {
                code: 403,
                url: "http://10.0.0.2:8080/private.txt".into(),
                ..Http::default()
            })),
            ..Layer7::default()
        });
        assert!(want.matches(&flow));
    }

    #[test]
    fn summaries_list_the_flows_of_an_address() {
        let flows = vec![
            tcp_flow(
                "10.0.0.1",
                "10.0.0.2",
                80,
                Verdict::Forwarded,
                DropReason::Unknown,
            ),
            tcp_flow(
                "10.0.0.3",
                "10.0.0.4",
                80,
                Verdict::Forwarded,
                DropReason::Unknown,
            ),
        ];
        assert_eq!(summarize(&flows, "10.0.0.9"), "none");
        assert_eq!(summarize(&flows, "10.0.0.2").split(" | ").count(), 1);
    }
}
