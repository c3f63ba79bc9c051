//! The relay's Observer: every call fans out to the connected agents and their
//! answers are combined; `GetFlows` streams are merged in time order through the
//! reorder window and carry node status events when agents go and come back.

use std::collections::{BTreeSet, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hubble_proto::UInt32Value;
use hubble_proto::observer::get_flows_response::ResponseTypes;
use hubble_proto::observer::observer_server::Observer;
use hubble_proto::observer::{
    GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest, GetNamespacesResponse,
    GetNodesRequest, GetNodesResponse, Namespace, Node, ServerStatusRequest, ServerStatusResponse,
};
use hubble_proto::relay::{NodeState, NodeStatusEvent};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use super::peers::{AgentClient, PeerSet};
use super::sort::SortBuffer;
use crate::flow::timestamp;
use crate::grpc::VERSION;

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// How long one agent may take to answer a unary call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The reorder window of followed streams (Hubble Relay's defaults).
#[derive(Debug, Clone, Copy)]
pub struct SortOptions {
    /// At most this many responses wait (`--sort-buffer-len-max`, 100).
    pub max_len: usize,
    /// A response waits at most this long (`--sort-buffer-drain-timeout`, 1s).
    pub window: Duration,
}

impl Default for SortOptions {
    fn default() -> Self {
        Self {
            max_len: 100,
            window: Duration::from_secs(1),
        }
    }
}

/// Hubble Relay's Observer over a [`PeerSet`].
#[derive(Debug, Clone)]
pub struct RelayService {
    peers: Arc<PeerSet>,
    sort: SortOptions,
    started: Instant,
}

impl RelayService {
    pub fn new(peers: Arc<PeerSet>, sort: SortOptions) -> Self {
        Self {
            peers,
            sort,
            started: Instant::now(),
        }
    }

    /// Call every connected agent at once; agents that fail are reported
    /// unavailable and left out of the answers.
    async fn each_agent<T, F, Fut>(&self, call: F) -> (Vec<(String, T)>, Vec<String>)
    where
        T: Send + 'static,
        F: Fn(AgentClient) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>> + Send + 'static,
    {
        let mut calls = JoinSet::new();
        for (name, client) in self.peers.connected() {
            let answer = tokio::time::timeout(CALL_TIMEOUT, call(client));
            calls.spawn(async move { (name, answer.await) });
        }
        let mut answers = Vec::new();
        let mut failed = self.peers.unavailable();
        while let Some(joined) = calls.join_next().await {
            let Ok((name, answer)) = joined else { continue };
            match answer {
                Ok(Ok(r)) => answers.push((name, r.into_inner())),
                Ok(Err(status)) => {
                    self.peers
                        .report_failure(&name, status.message().to_string());
                    failed.push(name);
                }
                Err(_) => {
                    self.peers
                        .report_failure(&name, format!("no answer within {CALL_TIMEOUT:?}"));
                    failed.push(name);
                }
            }
        }
        answers.sort_by(|a, b| a.0.cmp(&b.0));
        failed.sort();
        (answers, failed)
    }
}

/// A node status event as a `GetFlows` response.
fn node_status(state: NodeState, names: Vec<String>, message: String) -> GetFlowsResponse {
    GetFlowsResponse {
        node_name: String::new(),
        time: Some(timestamp(SystemTime::now())),
        response_types: Some(ResponseTypes::NodeStatus(NodeStatusEvent {
            state_change: state as i32,
            node_names: names,
            message,
        })),
    }
}

/// What the per-agent stream tasks send to the merger.
enum FromAgent {
    Response(Box<GetFlowsResponse>),
    Ended(String),
}

/// Stream one agent's `GetFlows` into `tx`; a broken stream marks the agent
/// unavailable.
fn stream_agent(
    peers: Arc<PeerSet>,
    name: String,
    mut client: AgentClient,
    request: GetFlowsRequest,
    tx: mpsc::Sender<FromAgent>,
    tasks: &mut JoinSet<()>,
) {
    tasks.spawn(async move {
        let result = async {
            let mut stream = client.get_flows(request).await?.into_inner();
            while let Some(response) = stream.message().await? {
                if tx
                    .send(FromAgent::Response(Box::new(response)))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Ok::<(), Status>(())
        }
        .await;
        if let Err(status) = result
            && status.code() != Code::InvalidArgument
        {
            peers.report_failure(&name, format!("GetFlows: {}", status.message()));
        }
        let _ = tx.send(FromAgent::Ended(name)).await;
    });
}

/// Merge the agents' streams in time order into `out` until every stream ends
/// (or, when following, until the client goes away).
async fn merge(
    peers: Arc<PeerSet>,
    request: GetFlowsRequest,
    sort: SortOptions,
    out: mpsc::Sender<Result<GetFlowsResponse, Status>>,
) {
    let follow = request.follow;
    // Subscribe first: no change between the listing and the subscription is missed.
    let mut changes = peers.subscribe();
    let (tx, mut rx) = mpsc::channel::<FromAgent>(1024);
    let mut tasks = JoinSet::new();
    let mut streaming: HashSet<String> = HashSet::new();
    for (name, client) in peers.connected() {
        streaming.insert(name.clone());
        stream_agent(
            peers.clone(),
            name,
            client,
            request.clone(),
            tx.clone(),
            &mut tasks,
        );
    }
    let unavailable = peers.unavailable();
    if !unavailable.is_empty() {
        let event = node_status(
            NodeState::NodeUnavailable,
            unavailable,
            "not connected".into(),
        );
        if out.send(Ok(event)).await.is_err() {
            return;
        }
    }
    // Without --follow the streams end; their answers are sorted all at once.
    let mut buffer = if follow {
        SortBuffer::new(sort.max_len, sort.window)
    } else {
        SortBuffer::new(usize::MAX, Duration::MAX)
    };
    // New streams of agents that come back send only new flows.
    let rejoin = GetFlowsRequest {
        number: 0,
        first: false,
        since: None,
        ..request.clone()
    };
    loop {
        if !follow && streaming.is_empty() {
            break;
        }
        let deadline = buffer.deadline();
        tokio::select! {
            received = rx.recv() => match received {
                Some(FromAgent::Response(r)) => buffer.push(*r, Instant::now()),
                Some(FromAgent::Ended(name)) => {
                    streaming.remove(&name);
                }
                None => break,
            },
            change = changes.recv(), if follow => match change {
                Ok(change) => {
                    if change.state == NodeState::NodeConnected
                        && !streaming.contains(&change.name)
                        && let Some((name, client)) = peers
                            .connected()
                            .into_iter()
                            .find(|(n, _)| *n == change.name)
                    {
                        streaming.insert(name.clone());
                        let request = rejoin.clone();
                        stream_agent(peers.clone(), name, client, request, tx.clone(), &mut tasks);
                    }
                    let event = node_status(change.state, vec![change.name], change.message);
                    buffer.push(event, Instant::now());
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            },
            _ = sleep_until(deadline), if deadline.is_some() => {}
            _ = out.closed() => return,
        }
        while let Some(r) = buffer.pop_ready(Instant::now()) {
            if out.send(Ok(r)).await.is_err() {
                return;
            }
        }
    }
    for r in buffer.drain() {
        if out.send(Ok(r)).await.is_err() {
            return;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

#[tonic::async_trait]
impl Observer for RelayService {
    type GetFlowsStream = Streamed<GetFlowsResponse>;

    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        let request = request.into_inner();
        if request.first && request.follow {
            return Err(Status::invalid_argument(
                "`first` cannot be combined with `follow`",
            ));
        }
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(merge(self.peers.clone(), request, self.sort, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_nodes(
        &self,
        _request: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        let (answers, _) = self
            .each_agent(|mut c| async move { c.get_nodes(GetNodesRequest {}).await })
            .await;
        let mut nodes: Vec<Node> = answers.into_iter().flat_map(|(_, r)| r.nodes).collect();
        for peer in self.peers.all() {
            if !nodes.iter().any(|n| n.name == peer.name) {
                nodes.push(Node {
                    name: peer.name,
                    address: peer.address.to_string(),
                    state: NodeState::NodeUnavailable as i32,
                    ..Node::default()
                });
            }
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(GetNodesResponse { nodes }))
    }

    async fn get_namespaces(
        &self,
        _request: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        let (answers, _) = self
            .each_agent(|mut c| async move { c.get_namespaces(GetNamespacesRequest {}).await })
            .await;
        let all: BTreeSet<(String, String)> = answers
            .into_iter()
            .flat_map(|(_, r)| r.namespaces)
            .map(|n| (n.cluster, n.namespace))
            .collect();
        Ok(Response::new(GetNamespacesResponse {
            namespaces: all
                .into_iter()
                .map(|(cluster, namespace)| Namespace { cluster, namespace })
                .collect(),
        }))
    }

    async fn server_status(
        &self,
        _request: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        let (answers, unavailable) = self
            .each_agent(|mut c| async move { c.server_status(ServerStatusRequest {}).await })
            .await;
        let mut total = ServerStatusResponse {
            uptime_ns: u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            version: VERSION.to_string(),
            num_connected_nodes: Some(UInt32Value {
                value: u32::try_from(answers.len()).unwrap_or(u32::MAX),
            }),
            num_unavailable_nodes: Some(UInt32Value {
                value: u32::try_from(unavailable.len()).unwrap_or(u32::MAX),
            }),
            unavailable_nodes: unavailable,
            ..ServerStatusResponse::default()
        };
        for (_, s) in answers {
            total.num_flows += s.num_flows;
            total.max_flows += s.max_flows;
            total.seen_flows += s.seen_flows;
        }
        Ok(Response::new(total))
    }
}
