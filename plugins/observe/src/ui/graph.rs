//! The service map of one namespace, aggregated from flows on the server so the
//! page receives a few hundred nodes and edges per update, never every flow.
//!
//! Nodes are workloads (the `app.kubernetes.io/name`, `app` or `k8s-app` label,
//! else the workload, else the pod) or the reserved entities `world`, `host`,
//! `kube-apiserver` and `remote-node`. An edge is (source node, destination node,
//! protocol, destination port); replies are not edges. Its rate is an exponentially
//! decaying flows-per-second estimate, so it falls back to zero when traffic stops.
//!
//! A connection between two pods is reported twice, leaving the source
//! (`from-endpoint`) and arriving at the destination (`to-endpoint`), where the
//! destination's ingress policy may still drop it. A forwarded flow counts only
//! where the connection arrives, so an edge is green only if traffic got through,
//! and rates are not doubled; drops count wherever they happen.

use std::collections::BTreeMap;

use hubble_proto::flow::layer4::Protocol;
use hubble_proto::flow::{DropReason, Endpoint, Flow, TraceObservationPoint, Verdict};
use serde::Serialize;

/// Time constant of the rate estimate (seconds).
const RATE_TAU_S: f64 = 5.0;

/// Labels that name an application, in order of preference.
const APP_LABELS: [&str; 3] = ["app.kubernetes.io/name", "app", "k8s-app"];

/// Reserved identities (Cilium's numbers) and the entity node they become.
const RESERVED: [(u32, &str); 4] = [
    (1, "host"),
    (2, "world"),
    (6, "remote-node"),
    (7, "kube-apiserver"),
];

/// One node of the map.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MapNode {
    /// `namespace/name`, or the entity's name for reserved entities.
    pub id: String,
    pub name: String,
    /// Empty for entities.
    pub namespace: String,
    /// `workload` or the entity (`world`, `host`, `kube-apiserver`, `remote-node`).
    pub kind: String,
    /// The security labels of the first endpoint seen (`k8s:app=...`), used to
    /// trace the policy of an edge.
    pub labels: Vec<String>,
}

/// One edge of the map, as the page draws it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MapEdge {
    /// `source|destination|protocol|port`.
    pub id: String,
    pub source: String,
    pub target: String,
    /// `TCP`, `UDP`, `SCTP`, `ICMPv4`, `ICMPv6` or empty.
    pub protocol: String,
    /// Destination port (0 for ICMP).
    pub port: u32,
    pub forwarded: u64,
    pub dropped: u64,
    /// `forwarded`, `dropped` or `mixed`.
    pub verdict: &'static str,
    /// Flows per second, decaying (see the module doc).
    pub rate: f64,
    /// Drop reason of the latest drop (Hubble's name), if any.
    pub drop_reason: String,
    /// Policies the datapath named as denying the latest drop (`ns/name`).
    pub denied_by: Vec<String>,
    /// Wall-clock time of the edge's first flow (ms since the epoch): the page
    /// reports how long a flow took from the datapath to the screen.
    pub first_ms: i64,
    /// Wall-clock time of the latest flow (ms since the epoch).
    pub last_ms: i64,
}

/// What the page receives for a map update.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MapSnapshot {
    pub namespace: String,
    pub nodes: Vec<MapNode>,
    pub edges: Vec<MapEdge>,
    /// Flows aggregated so far (replies and non-matching flows excluded).
    pub flows: u64,
    /// Nodes or edges left out because the map reached its caps.
    pub truncated: u64,
}

/// The edge's identity in the aggregation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct EdgeKey {
    source: String,
    target: String,
    protocol: &'static str,
    port: u32,
}

#[derive(Debug, Clone)]
struct EdgeState {
    forwarded: u64,
    dropped: u64,
    rate: f64,
    rate_at_s: f64,
    drop_reason: String,
    denied_by: Vec<String>,
    first_ms: i64,
    last_ms: i64,
}

/// The aggregation of one namespace's flows.
#[derive(Debug, Clone)]
pub struct ServiceMap {
    namespace: String,
    nodes: BTreeMap<String, MapNode>,
    edges: BTreeMap<EdgeKey, EdgeState>,
    max_nodes: usize,
    max_edges: usize,
    flows: u64,
    truncated: u64,
    changed: bool,
}

impl ServiceMap {
    /// A map of `namespace` holding at most `max_nodes` nodes and `max_edges` edges
    /// (further ones are counted in `truncated`, so memory stays bounded).
    pub fn new(namespace: &str, max_nodes: usize, max_edges: usize) -> Self {
        Self {
            namespace: namespace.to_owned(),
            nodes: BTreeMap::new(),
            edges: BTreeMap::new(),
            max_nodes,
            max_edges,
            flows: 0,
            truncated: 0,
            changed: false,
        }
    }

    /// Whether anything changed since the last [`ServiceMap::take_changed`].
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Count one flow seen at `now_s` (seconds on any monotonic clock). Flows
    /// that touch neither side of the namespace, replies, and flows without
    /// endpoints are ignored. Returns the edge id when the flow was counted.
    pub fn add(&mut self, flow: &Flow, now_s: f64) -> Option<String> {
        // A policy verdict repeats its connection's trace event: counted once, there.
        let policy_verdict = flow
            .event_type
            .as_ref()
            .is_some_and(|e| e.r#type == crate::flow::MESSAGE_TYPE_POLICY_VERDICT);
        if flow.is_reply.as_ref().is_some_and(|r| r.value) || policy_verdict {
            return None;
        }
        let (src, dst) = (flow.source.as_ref()?, flow.destination.as_ref()?);
        if src.namespace != self.namespace && dst.namespace != self.namespace {
            return None;
        }
        if flow.verdict != Verdict::Dropped as i32
            && flow.trace_observation_point == TraceObservationPoint::FromEndpoint as i32
            && !dst.pod_name.is_empty()
        {
            return None;
        }
        let (protocol, port) = protocol_port(flow);
        let source = self.node(src)?;
        let target = self.node(dst)?;
        let key = EdgeKey {
            source,
            target,
            protocol,
            port,
        };
        let id = edge_id(&key);
        if !self.edges.contains_key(&key) && self.edges.len() >= self.max_edges {
            self.truncated += 1;
            return None;
        }
        let ms = flow_ms(flow);
        let edge = self.edges.entry(key).or_insert(EdgeState {
            forwarded: 0,
            dropped: 0,
            rate: 0.0,
            rate_at_s: now_s,
            drop_reason: String::new(),
            denied_by: Vec::new(),
            first_ms: ms,
            last_ms: ms,
        });
        edge.rate = decayed(edge.rate, now_s - edge.rate_at_s) + 1.0 / RATE_TAU_S;
        edge.rate_at_s = now_s;
        edge.last_ms = edge.last_ms.max(ms);
        if flow.verdict == Verdict::Dropped as i32 {
            edge.dropped += 1;
            edge.drop_reason = drop_reason(flow);
            edge.denied_by = flow
                .ingress_denied_by
                .iter()
                .chain(&flow.egress_denied_by)
                .map(|p| format!("{}/{}", p.namespace, p.name))
                .collect();
        } else {
            edge.forwarded += 1;
        }
        self.flows += 1;
        self.changed = true;
        Some(id)
    }

    /// The node of an endpoint, added if new (None when the map is full).
    fn node(&mut self, ep: &Endpoint) -> Option<String> {
        let node = node_of(ep);
        if self.nodes.contains_key(&node.id) {
            return Some(node.id);
        }
        if self.nodes.len() >= self.max_nodes {
            self.truncated += 1;
            return None;
        }
        let id = node.id.clone();
        self.nodes.insert(id.clone(), node);
        Some(id)
    }

    /// The map as the page draws it, rates decayed to `now_s`.
    pub fn snapshot(&self, now_s: f64) -> MapSnapshot {
        MapSnapshot {
            namespace: self.namespace.clone(),
            nodes: self.nodes.values().cloned().collect(),
            edges: self
                .edges
                .iter()
                .map(|(key, e)| MapEdge {
                    id: edge_id(key),
                    source: key.source.clone(),
                    target: key.target.clone(),
                    protocol: key.protocol.to_owned(),
                    port: key.port,
                    forwarded: e.forwarded,
                    dropped: e.dropped,
                    verdict: match (e.forwarded, e.dropped) {
                        (_, 0) => "forwarded",
                        (0, _) => "dropped",
                        _ => "mixed",
                    },
                    rate: round2(decayed(e.rate, now_s - e.rate_at_s)),
                    drop_reason: e.drop_reason.clone(),
                    denied_by: e.denied_by.clone(),
                    first_ms: e.first_ms,
                    last_ms: e.last_ms,
                })
                .collect(),
            flows: self.flows,
            truncated: self.truncated,
        }
    }
}

/// The map node an endpoint belongs to.
pub fn node_of(ep: &Endpoint) -> MapNode {
    let entity = RESERVED
        .iter()
        .find(|(id, name)| {
            ep.identity == *id || ep.labels.iter().any(|l| l == &format!("reserved:{name}"))
        })
        .map(|(_, name)| *name)
        .or_else(|| (ep.namespace.is_empty() && ep.pod_name.is_empty()).then_some("world"));
    if let Some(entity) = entity {
        return MapNode {
            id: entity.to_owned(),
            name: entity.to_owned(),
            namespace: String::new(),
            kind: entity.to_owned(),
            labels: vec![format!("reserved:{entity}")],
        };
    }
    let name = APP_LABELS
        .iter()
        .find_map(|key| label_value(&ep.labels, key))
        .map(str::to_owned)
        .or_else(|| ep.workloads.first().map(|w| w.name.clone()))
        .unwrap_or_else(|| ep.pod_name.clone());
    MapNode {
        id: format!("{}/{name}", ep.namespace),
        name,
        namespace: ep.namespace.clone(),
        kind: "workload".to_owned(),
        labels: ep.labels.clone(),
    }
}

/// The value of `key` in `source:key=value` labels.
fn label_value<'a>(labels: &'a [String], key: &str) -> Option<&'a str> {
    labels.iter().find_map(|l| {
        let (_, kv) = l.split_once(':')?;
        let (k, v) = kv.split_once('=')?;
        (k == key).then_some(v)
    })
}

/// The edge's protocol and destination port.
pub fn protocol_port(flow: &Flow) -> (&'static str, u32) {
    match flow.l4.as_ref().and_then(|l4| l4.protocol.as_ref()) {
        Some(Protocol::Tcp(t)) => ("TCP", t.destination_port),
        Some(Protocol::Udp(u)) => ("UDP", u.destination_port),
        Some(Protocol::Sctp(s)) => ("SCTP", s.destination_port),
        Some(Protocol::IcmPv4(_)) => ("ICMPv4", 0),
        Some(Protocol::IcmPv6(_)) => ("ICMPv6", 0),
        None => ("", 0),
    }
}

/// Hubble's name of the flow's drop reason (empty when it was not dropped).
pub fn drop_reason(flow: &Flow) -> String {
    if flow.verdict != Verdict::Dropped as i32 {
        return String::new();
    }
    DropReason::try_from(flow.drop_reason_desc)
        .map(|r| r.as_str_name().to_owned())
        .unwrap_or_else(|_| format!("reason {}", flow.drop_reason))
}

/// The flow's time in ms since the epoch (0 without a time).
pub fn flow_ms(flow: &Flow) -> i64 {
    flow.time
        .as_ref()
        .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos / 1_000_000))
}

fn edge_id(key: &EdgeKey) -> String {
    format!(
        "{}|{}|{}|{}",
        key.source, key.target, key.protocol, key.port
    )
}

fn decayed(rate: f64, elapsed_s: f64) -> f64 {
    rate * (-elapsed_s.max(0.0) / RATE_TAU_S).exp()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use hubble_proto::BoolValue;
    use hubble_proto::flow::{Layer4, Tcp};

    use super::*;

    fn pod(ns: &str, pod: &str, app: &str) -> Endpoint {
        Endpoint {
            identity: 300,
            namespace: ns.into(),
            pod_name: pod.into(),
            labels: vec![
                format!("k8s:app={app}"),
                format!("k8s:io.kubernetes.pod.namespace={ns}"),
            ],
            ..Endpoint::default()
        }
    }

    fn tcp(src: Endpoint, dst: Endpoint, port: u32, verdict: Verdict) -> Flow {
        Flow {
            source: Some(src),
            destination: Some(dst),
            verdict: verdict as i32,
            l4: Some(Layer4 {
                protocol: Some(Protocol::Tcp(Tcp {
                    source_port: 40000,
                    destination_port: port,
                    flags: None,
                })),
            }),
            ..Flow::default()
        }
    }

    #[test]
    fn pods_of_one_app_are_one_node_and_verdicts_mix() {
        let mut map = ServiceMap::new("payments", 10, 10);
        let api1 = pod("payments", "payments-api-1", "payments-api");
        let api2 = pod("payments", "payments-api-2", "payments-api");
        let db = pod("payments", "postgres-0", "postgres");
        map.add(&tcp(api1, db.clone(), 5432, Verdict::Forwarded), 0.0);
        map.add(&tcp(api2, db.clone(), 5432, Verdict::Dropped), 0.0);
        let ops = pod("ops", "toolbox", "ops-toolbox");
        map.add(&tcp(ops, db, 5432, Verdict::Dropped), 0.0);
        let snap = map.snapshot(0.0);
        let ids: Vec<&str> = snap.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "ops/ops-toolbox",
                "payments/payments-api",
                "payments/postgres"
            ]
        );
        assert_eq!(snap.edges.len(), 2);
        let api_db = &snap.edges[1];
        assert_eq!(
            api_db.id,
            "payments/payments-api|payments/postgres|TCP|5432"
        );
        assert_eq!((api_db.forwarded, api_db.dropped), (1, 1));
        assert_eq!(api_db.verdict, "mixed");
        assert_eq!(snap.edges[0].verdict, "dropped");
    }

    #[test]
    fn replies_other_namespaces_and_entities() {
        let mut map = ServiceMap::new("payments", 10, 10);
        let api = pod("payments", "api", "payments-api");
        let mut reply = tcp(api.clone(), pod("ops", "t", "t"), 40000, Verdict::Forwarded);
        reply.is_reply = Some(BoolValue { value: true });
        assert!(map.add(&reply, 0.0).is_none());
        let elsewhere = tcp(
            pod("a", "x", "x"),
            pod("b", "y", "y"),
            80,
            Verdict::Forwarded,
        );
        assert!(map.add(&elsewhere, 0.0).is_none());
        let world = Endpoint {
            identity: 2,
            labels: vec!["reserved:world".into()],
            ..Endpoint::default()
        };
        let id = map.add(&tcp(api, world, 443, Verdict::Forwarded), 0.0);
        assert_eq!(id.as_deref(), Some("payments/payments-api|world|TCP|443"));
        let snap = map.snapshot(0.0);
        assert_eq!(snap.nodes[1].kind, "world");
    }

    #[test]
    fn forwarded_counts_where_the_connection_arrives() {
        let mut map = ServiceMap::new("payments", 10, 10);
        let (ops, db) = (pod("ops", "t", "t"), pod("payments", "db", "postgres"));
        let mut left = tcp(ops.clone(), db.clone(), 5432, Verdict::Forwarded);
        left.trace_observation_point = TraceObservationPoint::FromEndpoint as i32;
        assert!(map.add(&left, 0.0).is_none());
        let mut dropped = tcp(ops, db, 5432, Verdict::Dropped);
        dropped.drop_reason_desc = DropReason::PolicyDenied as i32;
        assert!(map.add(&dropped, 0.0).is_some());
        let edge = &map.snapshot(0.0).edges[0];
        assert_eq!(edge.verdict, "dropped");
        assert_eq!(edge.drop_reason, "POLICY_DENIED");
    }

    #[test]
    fn rates_decay_and_caps_bound_memory() {
        let mut map = ServiceMap::new("ns", 3, 1);
        let (a, b, c) = (
            pod("ns", "a", "a"),
            pod("ns", "b", "b"),
            pod("ns", "c", "c"),
        );
        for i in 0..50 {
            map.add(
                &tcp(a.clone(), b.clone(), 80, Verdict::Forwarded),
                f64::from(i) * 0.1,
            );
        }
        let rate = map.snapshot(5.0).edges[0].rate;
        assert!((rate - 10.0).abs() < 4.0, "about 10 flows/s: {rate}");
        assert!(map.snapshot(60.0).edges[0].rate < 0.01);
        assert!(map.add(&tcp(a, c, 80, Verdict::Forwarded), 6.0).is_none());
        assert_eq!(map.snapshot(6.0).truncated, 1);
        assert_eq!(map.snapshot(6.0).edges.len(), 1);
    }
}
