//! The Hubble API on the agent: Observer (GetFlows, GetNodes, GetNamespaces,
//! ServerStatus) and Peer (Notify), served from the flow ring.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hubble_proto::UInt32Value;
use hubble_proto::flow::{Flow, LostEvent, LostEventSource};
use hubble_proto::observer::observer_server::Observer;
use hubble_proto::observer::{
    GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest, GetNamespacesResponse,
    GetNodesRequest, GetNodesResponse, Namespace, Node, ServerStatusRequest, ServerStatusResponse,
    get_flows_response::ResponseTypes,
};
use hubble_proto::peer::peer_server::Peer;
use hubble_proto::peer::{ChangeNotification, ChangeNotificationType, NotifyRequest};
use hubble_proto::relay::NodeState;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::entry::FlowEntry;
use crate::filter::keeps;
use crate::flow::{system_time, timestamp};
use crate::metrics::LostEvents;
use crate::metrics::lost::LostRecord;
use crate::peer_source::PeerSource;
use crate::ring::FlowRing;

/// Reported as `version` by ServerStatus and GetNodes.
pub const VERSION: &str = concat!("porin ", env!("CARGO_PKG_VERSION"));

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The Hubble services of one agent.
#[derive(Clone)]
pub struct HubbleService {
    ring: Arc<FlowRing>,
    node: String,
    /// Where peers reach this agent (`unix:///...` or `host:port`).
    address: String,
    started: Instant,
    lost: Arc<LostEvents>,
    /// The other agents the Peer service announces (none: this node only).
    peers: Option<PeerSource>,
}

impl std::fmt::Debug for PeerSourceDebug<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "cluster" } else { "self" })
    }
}

struct PeerSourceDebug<'a>(&'a Option<PeerSource>);

impl HubbleService {
    pub fn new(ring: Arc<FlowRing>, node: impl Into<String>, address: impl Into<String>) -> Self {
        Self {
            ring,
            node: node.into(),
            address: address.into(),
            started: Instant::now(),
            lost: Arc::new(LostEvents::new()),
            peers: None,
        }
    }

    /// Announce the agents `peers` lists with the Peer service (followed every
    /// [`PEER_POLL`]), not only this one.
    pub fn with_peers(mut self, peers: PeerSource) -> Self {
        self.peers = Some(peers);
        self
    }

    /// Report and count lost events through `lost` (shared with the pipeline).
    pub fn with_lost_events(mut self, lost: Arc<LostEvents>) -> Self {
        self.lost = lost;
        self
    }

    fn uptime_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The stored flows a request asks for, oldest first.
    fn backlog(&self, req: &GetFlowsRequest) -> Vec<Arc<FlowEntry>> {
        let since = req.since.as_ref().map(system_time);
        let until = req.until.as_ref().map(system_time);
        let kept: Vec<Arc<FlowEntry>> = self
            .ring
            .snapshot()
            .into_iter()
            .filter(|f| in_window(f, since, until))
            .filter(|f| keeps(&req.whitelist, &req.blacklist, f.flow()))
            .collect();
        let n = usize::try_from(req.number).unwrap_or(usize::MAX);
        // `number` 0 means all of them, unless following (then only new ones).
        if n == 0 {
            return if req.follow && since.is_none() {
                Vec::new()
            } else {
                kept
            };
        }
        if req.first {
            kept.into_iter().take(n).collect()
        } else {
            let skip = kept.len().saturating_sub(n);
            kept.into_iter().skip(skip).collect()
        }
    }
}

fn in_window(flow: &FlowEntry, since: Option<SystemTime>, until: Option<SystemTime>) -> bool {
    let t = flow.time();
    since.is_none_or(|s| t >= s) && until.is_none_or(|u| t <= u)
}

/// A `lost_events` response. Hubble sends them to every reader, unfiltered.
fn lost_response(node: &str, time: SystemTime, event: LostEvent) -> GetFlowsResponse {
    GetFlowsResponse {
        node_name: node.to_string(),
        time: Some(timestamp(time)),
        response_types: Some(ResponseTypes::LostEvents(event)),
    }
}

/// The stored flows and the losses reported since the oldest of them, in time
/// order.
fn with_losses(
    node: &str,
    flows: &[Arc<FlowEntry>],
    lost: Vec<LostRecord>,
) -> Vec<GetFlowsResponse> {
    let Some(oldest) = flows.first().map(|f| f.time()) else {
        return Vec::new();
    };
    let mut lost = lost.into_iter().filter(|r| r.time >= oldest).peekable();
    let mut out = Vec::with_capacity(flows.len());
    for flow in flows {
        let t = flow.time();
        while let Some(r) = lost.next_if(|r| r.time <= t) {
            out.push(lost_response(node, r.time, r.event));
        }
        out.push(response(flow.flow()));
    }
    out.extend(lost.map(|r| lost_response(node, r.time, r.event)));
    out
}

fn response(flow: &Flow) -> GetFlowsResponse {
    flow_response(flow.clone())
}

fn flow_response(flow: Flow) -> GetFlowsResponse {
    GetFlowsResponse {
        node_name: flow.node_name.clone(),
        time: flow.time,
        response_types: Some(ResponseTypes::Flow(flow)),
    }
}

impl std::fmt::Debug for HubbleService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubbleService")
            .field("node", &self.node)
            .field("address", &self.address)
            .field("peers", &PeerSourceDebug(&self.peers))
            .finish_non_exhaustive()
    }
}

/// How often the Peer service looks for agents that came or went.
pub const PEER_POLL: Duration = Duration::from_secs(1);

/// The notifications that turn the agents `before` into `now`.
fn peer_changes(
    before: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
) -> Vec<ChangeNotification> {
    let note = |name: &str, address: &str, kind: ChangeNotificationType| ChangeNotification {
        name: name.to_string(),
        address: address.to_string(),
        r#type: kind as i32,
        tls: None,
    };
    let mut out = Vec::new();
    for (name, address) in now {
        match before.get(name) {
            None => out.push(note(name, address, ChangeNotificationType::PeerAdded)),
            Some(old) if old != address => {
                out.push(note(name, address, ChangeNotificationType::PeerUpdated));
            }
            Some(_) => {}
        }
    }
    for (name, address) in before {
        if !now.contains_key(name) {
            out.push(note(name, address, ChangeNotificationType::PeerDeleted));
        }
    }
    out
}

#[tonic::async_trait]
impl Observer for HubbleService {
    type GetFlowsStream = Streamed<GetFlowsResponse>;

    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        let req = request.into_inner();
        if req.first && req.follow {
            return Err(Status::invalid_argument(
                "`first` cannot be combined with `follow`",
            ));
        }
        // Subscribe before reading the backlog so nothing falls between the two.
        let mut live = self.ring.follow();
        let mut losses = self.lost.follow();
        let backlog = with_losses(&self.node, &self.backlog(&req), self.lost.recent());
        let node = self.node.clone();
        let lost = self.lost.clone();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            for message in backlog {
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
            }
            if !req.follow {
                return;
            }
            let until = req.until.as_ref().map(system_time);
            loop {
                let next = tokio::select! {
                    flow = live.recv() => flow,
                    loss = losses.recv() => match loss {
                        Ok(r) => {
                            if tx.send(Ok(lost_response(&node, r.time, r.event))).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        // Missed loss reports are themselves losses of this reader.
                        Err(RecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                        Err(RecvError::Closed) => return,
                    },
                };
                let message = match next {
                    Ok(flow) => {
                        if !in_window(&flow, None, until) {
                            if until.is_some() {
                                return;
                            }
                            continue;
                        }
                        let filtered = !req.whitelist.is_empty() || !req.blacklist.is_empty();
                        if filtered && !keeps(&req.whitelist, &req.blacklist, flow.flow()) {
                            continue;
                        }
                        flow_response(flow.to_flow())
                    }
                    Err(RecvError::Lagged(n)) => {
                        lost.record_reader(n);
                        lost_response(
                            &node,
                            SystemTime::now(),
                            LostEvent {
                                source: LostEventSource::HubbleRingBuffer as i32,
                                num_events_lost: n,
                                cpu: None,
                            },
                        )
                    }
                    Err(RecvError::Closed) => return,
                };
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_nodes(
        &self,
        _request: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        Ok(Response::new(GetNodesResponse {
            nodes: vec![Node {
                name: self.node.clone(),
                version: VERSION.to_string(),
                address: self.address.clone(),
                state: NodeState::NodeConnected as i32,
                tls: None,
                uptime_ns: self.uptime_ns(),
                num_flows: self.ring.len() as u64,
                max_flows: self.ring.capacity() as u64,
                seen_flows: self.ring.seen(),
            }],
        }))
    }

    async fn get_namespaces(
        &self,
        _request: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        let names: BTreeSet<String> = self
            .ring
            .snapshot()
            .iter()
            .flat_map(|f| {
                let f = f.flow();
                [&f.source, &f.destination].map(|ep| ep.as_ref().map(|e| e.namespace.clone()))
            })
            .flatten()
            .filter(|ns| !ns.is_empty())
            .collect();
        Ok(Response::new(GetNamespacesResponse {
            namespaces: names
                .into_iter()
                .map(|namespace| Namespace {
                    cluster: String::new(),
                    namespace,
                })
                .collect(),
        }))
    }

    async fn server_status(
        &self,
        _request: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        Ok(Response::new(ServerStatusResponse {
            num_flows: self.ring.len() as u64,
            max_flows: self.ring.capacity() as u64,
            seen_flows: self.ring.seen(),
            uptime_ns: self.uptime_ns(),
            // One agent answers for itself: it is the one connected node.
            num_connected_nodes: Some(UInt32Value { value: 1 }),
            num_unavailable_nodes: Some(UInt32Value { value: 0 }),
            unavailable_nodes: Vec::new(),
            version: VERSION.to_string(),
        }))
    }
}

#[tonic::async_trait]
impl Peer for HubbleService {
    type NotifyStream = Streamed<ChangeNotification>;

    /// Every agent as PEER_ADDED (this one at least), then additions, address
    /// changes and removals as they happen.
    async fn notify(
        &self,
        _request: Request<NotifyRequest>,
    ) -> Result<Response<Self::NotifyStream>, Status> {
        let me = (self.node.clone(), self.address.clone());
        let source = self.peers.clone();
        let list = move || {
            let mut all = source.as_ref().map(|s| s()).unwrap_or_default();
            all.insert(me.0.clone(), me.1.clone());
            all
        };
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut known = BTreeMap::new();
            loop {
                let now = list();
                for change in peer_changes(&known, &now) {
                    if tx.send(Ok(change)).await.is_err() {
                        return;
                    }
                }
                known = now;
                tokio::select! {
                    _ = tokio::time::sleep(PEER_POLL) => {}
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_stream::StreamExt;

    use super::*;

    fn flow_now() -> Flow {
        Flow {
            time: Some(timestamp(SystemTime::now())),
            node_name: "node-1".to_string(),
            ..Flow::default()
        }
    }

    fn lost_of(r: &GetFlowsResponse) -> Option<(i32, u64)> {
        match &r.response_types {
            Some(ResponseTypes::LostEvents(l)) => Some((l.source, l.num_events_lost)),
            _ => None,
        }
    }

    #[test]
    fn peers_that_come_change_and_go_are_announced() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(n, a)| (n.to_string(), a.to_string()))
                .collect()
        };
        let kinds = |changes: Vec<ChangeNotification>| -> Vec<(String, i32)> {
            changes.into_iter().map(|c| (c.name, c.r#type)).collect()
        };
        let before = map(&[("node-1", "unix:///a"), ("node-2", "unix:///b")]);
        let now = map(&[
            ("node-1", "unix:///a"),
            ("node-2", "unix:///c"),
            ("node-3", "x:1"),
        ]);
        assert_eq!(
            kinds(peer_changes(&before, &now)),
            vec![
                (
                    "node-2".to_string(),
                    ChangeNotificationType::PeerUpdated as i32
                ),
                (
                    "node-3".to_string(),
                    ChangeNotificationType::PeerAdded as i32
                ),
            ]
        );
        assert_eq!(
            kinds(peer_changes(&now, &map(&[("node-1", "unix:///a")]))),
            vec![
                (
                    "node-2".to_string(),
                    ChangeNotificationType::PeerDeleted as i32
                ),
                (
                    "node-3".to_string(),
                    ChangeNotificationType::PeerDeleted as i32
                ),
            ]
        );
    }

    #[tokio::test]
    async fn lost_events_are_reported_in_band() {
        let ring = Arc::new(FlowRing::new(16));
        let lost = Arc::new(LostEvents::new());
        let service =
            HubbleService::new(ring.clone(), "node-1", "unix:///x").with_lost_events(lost.clone());
        ring.push(flow_now());
        lost.record(LostEventSource::PerfEventRingBuffer, 4);
        ring.push(flow_now());

        // Stored flows come with the losses between them, in time order.
        let stream = service
            .get_flows(Request::new(GetFlowsRequest::default()))
            .await
            .expect("stream")
            .into_inner();
        let all: Vec<GetFlowsResponse> = stream.map(|r| r.expect("ok")).collect().await;
        let kinds: Vec<Option<(i32, u64)>> = all.iter().map(lost_of).collect();
        assert_eq!(
            kinds,
            vec![
                None,
                Some((LostEventSource::PerfEventRingBuffer as i32, 4)),
                None
            ]
        );
        assert_eq!(all[1].node_name, "node-1");

        // Followers hear of new losses as they happen.
        let mut follow = service
            .get_flows(Request::new(GetFlowsRequest {
                follow: true,
                ..GetFlowsRequest::default()
            }))
            .await
            .expect("stream")
            .into_inner();
        tokio::time::sleep(Duration::from_millis(50)).await;
        lost.record(LostEventSource::ObserverEventsQueue, 9);
        let next = tokio::time::timeout(Duration::from_secs(5), follow.next())
            .await
            .expect("a response in time")
            .expect("stream open")
            .expect("ok");
        assert_eq!(
            lost_of(&next),
            Some((LostEventSource::ObserverEventsQueue as i32, 9))
        );
    }
}
