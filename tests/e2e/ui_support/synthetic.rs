//! A synthetic Hubble Observer for the UI's scale case: `workloads` workloads of
//! namespace `scale` talking over a fixed set of connections (one in twenty
//! dropped by policy) at `rate` flows per second, stamped with the time they are
//! made, plus one new connection every 500 ms whose first flow's time is when it
//! was made: the page reports how long that flow took to become an edge on screen.
//! Served on a unix socket; `porin relay --peer` reads it like an agent.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use porin_observe::hubble_proto::Timestamp;
use porin_observe::hubble_proto::flow::layer4::Protocol;
use porin_observe::hubble_proto::flow::{
    DropReason, Endpoint, Flow, Ip, Layer4, Tcp, TraceObservationPoint, Verdict,
};
use porin_observe::hubble_proto::observer::get_flows_response::ResponseTypes;
use porin_observe::hubble_proto::observer::observer_server::{Observer, ObserverServer};
use porin_observe::hubble_proto::observer::{
    GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest, GetNamespacesResponse,
    GetNodesRequest, GetNodesResponse, Namespace, ServerStatusRequest, ServerStatusResponse,
};
use tokio::sync::broadcast;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

pub const NAMESPACE: &str = "scale";

#[derive(Clone)]
struct SyntheticObserver {
    flows: broadcast::Sender<Arc<Flow>>,
}

type Streamed = Pin<Box<dyn Stream<Item = Result<GetFlowsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Observer for SyntheticObserver {
    type GetFlowsStream = Streamed;

    async fn get_flows(
        &self,
        _request: Request<GetFlowsRequest>,
    ) -> Result<Response<Streamed>, Status> {
        let rx = tokio_stream::wrappers::BroadcastStream::new(self.flows.subscribe());
        let stream = rx.filter_map(|f| {
            let flow = f.ok()?;
            Some(Ok(GetFlowsResponse {
                node_name: "synthetic".into(),
                time: flow.time,
                response_types: Some(ResponseTypes::Flow((*flow).clone())),
            }))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_nodes(
        &self,
        _request: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        Ok(Response::new(GetNodesResponse::default()))
    }

    async fn get_namespaces(
        &self,
        _request: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        Ok(Response::new(GetNamespacesResponse {
            namespaces: vec![Namespace {
                cluster: String::new(),
                namespace: NAMESPACE.into(),
            }],
        }))
    }

    async fn server_status(
        &self,
        _request: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        Ok(Response::new(ServerStatusResponse {
            version: "synthetic".into(),
            ..ServerStatusResponse::default()
        }))
    }
}

fn workload(i: usize) -> Endpoint {
    Endpoint {
        id: u32::try_from(i).expect("small"),
        identity: 10_000 + u32::try_from(i).expect("small"),
        namespace: NAMESPACE.into(),
        labels: vec![
            format!("k8s:app=app-{i:03}"),
            format!("k8s:io.kubernetes.pod.namespace={NAMESPACE}"),
        ],
        pod_name: format!("app-{i:03}-7d9f8"),
        ..Endpoint::default()
    }
}

fn now() -> Timestamp {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    Timestamp {
        seconds: i64::try_from(d.as_secs()).expect("time"),
        nanos: i32::try_from(d.subsec_nanos()).expect("nanos"),
    }
}

fn flow(src: usize, dst: usize, port: u32, dropped: bool) -> Flow {
    Flow {
        time: Some(now()),
        verdict: if dropped {
            Verdict::Dropped
        } else {
            Verdict::Forwarded
        } as i32,
        drop_reason: if dropped { 133 } else { 0 },
        drop_reason_desc: if dropped {
            DropReason::PolicyDenied as i32
        } else {
            0
        },
        ip: Some(Ip {
            source: format!("10.1.{}.{}", src / 250, src % 250 + 1),
            destination: format!("10.1.{}.{}", dst / 250, dst % 250 + 1),
            ..Ip::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(Protocol::Tcp(Tcp {
                source_port: 40_000,
                destination_port: port,
                flags: None,
            })),
        }),
        source: Some(workload(src)),
        destination: Some(workload(dst)),
        trace_observation_point: TraceObservationPoint::ToEndpoint as i32,
        node_name: "synthetic".into(),
        ..Flow::default()
    }
}

/// Serve the synthetic Observer on `socket` and produce flows until the runtime stops.
pub fn start(socket: &Path, workloads: usize, rate: u64) {
    let (tx, _) = broadcast::channel(65_536);
    let listener = tokio::net::UnixListener::bind(socket).expect("bind the synthetic socket");
    let service = ObserverServer::new(SyntheticObserver { flows: tx.clone() });
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await
            .expect("synthetic Observer");
    });
    // Three connections per workload: 3 x `workloads` edges.
    let edges: Vec<(usize, usize, u32)> = (0..workloads)
        .flat_map(|i| {
            [(7, 1), (13, 5), (31, 11)].map(|(m, a)| {
                let j = (i * m + a) % workloads;
                (
                    i,
                    if j == i { (i + 1) % workloads } else { j },
                    8000 + u32::try_from(j % 20).expect("small"),
                )
            })
        })
        .collect();
    tokio::spawn(async move {
        let per_tick = usize::try_from(rate / 100).expect("rate");
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let (mut next, mut n) = (0usize, 0u64);
        loop {
            tick.tick().await;
            for _ in 0..per_tick {
                let (s, d, port) = edges[next % edges.len()];
                let _ = tx.send(Arc::new(flow(
                    s,
                    d,
                    port,
                    (next % edges.len()).is_multiple_of(20),
                )));
                next += 1;
            }
            n += 1;
            if n.is_multiple_of(50) {
                // A connection never seen before.
                let k = usize::try_from(n / 50).expect("small");
                let (s, d) = (k % workloads, (k * 17 + 3) % workloads);
                let _ = tx.send(Arc::new(flow(
                    s,
                    d,
                    30_000 + u32::try_from(k).expect("small"),
                    false,
                )));
            }
        }
    });
}
