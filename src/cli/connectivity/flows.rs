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

/// Every node's flows since `since`.
pub async fn collect(targets: &[AgentTarget], since: SystemTime) -> Result<Vec<Flow>> {
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
    for target in targets {
        let server = HubbleAddress::Unix(target.hubble_socket.clone());
        let mut client = server
            .observer_with(None)
            .await
            .with_context(|| format!("the Hubble API of {}", target.node))?;
        let mut stream = client
            .get_flows(request.clone())
            .await
            .with_context(|| format!("GetFlows on {}", target.node))?
            .into_inner();
        while let Some(response) = stream
            .message()
            .await
            .with_context(|| format!("reading flows of {}", target.node))?
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
    let deadline = Instant::now() + FLOW_WAIT;
    loop {
        let flows = collect(targets, since)
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
