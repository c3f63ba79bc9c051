//! The page's live feed: one Server-Sent Events stream per open page, fed by one
//! followed `GetFlows` call restricted to the namespace. The flows are aggregated
//! here into the service map; every tick the page gets the map (when it changed)
//! and the newest flows for the table, never more than [`MAX_ROWS_PER_TICK`], so
//! a busy namespace costs the page a bounded amount of work per update.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::response::sse::Event;
use hubble_proto::flow::FlowFilter;
use hubble_proto::observer::get_flows_response::ResponseTypes;
use hubble_proto::observer::{GetFlowsRequest, GetFlowsResponse};
use hubble_proto::relay::NodeState;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tonic::Streaming;
use tracing::debug;

use super::graph::ServiceMap;
use super::rows::FlowRow;

/// At most this many workloads and edges per map (further ones are counted).
pub const MAX_NODES: usize = 2_000;
pub const MAX_EDGES: usize = 10_000;
/// The newest flows sent per tick; older ones of the same tick are only counted.
pub const MAX_ROWS_PER_TICK: usize = 100;
/// Send the map at least this often, so decaying rates reach the page.
const MAP_REFRESH: Duration = Duration::from_secs(2);

/// The `GetFlows` request of one namespace: the newest `history` stored flows,
/// then every new one, where either side is in the namespace.
pub fn request(namespace: &str, history: u64) -> GetFlowsRequest {
    let pods = vec![format!("{namespace}/")];
    GetFlowsRequest {
        number: history,
        follow: true,
        whitelist: vec![
            FlowFilter {
                source_pod: pods.clone(),
                ..FlowFilter::default()
            },
            FlowFilter {
                destination_pod: pods,
                ..FlowFilter::default()
            },
        ],
        ..GetFlowsRequest::default()
    }
}

/// The `flows` event: the newest flows since the last one.
#[derive(Debug, Serialize)]
struct FlowsUpdate<'a> {
    rows: &'a VecDeque<FlowRow>,
    /// Flows of this tick not sent (only the newest [`MAX_ROWS_PER_TICK`] are).
    skipped: u64,
}

/// The `status` event: what the upstream reported besides flows.
#[derive(Debug, Serialize)]
struct StatusUpdate {
    /// Flows the upstream lost and said so (`lost_events`), in total.
    lost: u64,
    message: String,
}

/// Aggregate `flows` and feed the page through `tx` until the page goes away
/// or the upstream stream ends (the page is told, and reconnects).
pub async fn aggregate(
    mut flows: Streaming<GetFlowsResponse>,
    tx: mpsc::Sender<Result<Event, Infallible>>,
    namespace: String,
    tick: Duration,
) {
    let started = Instant::now();
    let mut map = ServiceMap::new(&namespace, MAX_NODES, MAX_EDGES);
    let mut rows: VecDeque<FlowRow> = VecDeque::with_capacity(MAX_ROWS_PER_TICK);
    let mut skipped = 0u64;
    let mut lost = 0u64;
    let mut map_pending = true;
    let mut map_sent = started;
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = flows.message() => match message {
                Ok(Some(response)) => match response.response_types {
                    Some(ResponseTypes::Flow(flow)) => {
                        let edge = map.add(&flow, started.elapsed().as_secs_f64());
                        if rows.len() == MAX_ROWS_PER_TICK {
                            rows.pop_front();
                            skipped += 1;
                        }
                        rows.push_back(FlowRow::new(&flow, edge));
                    }
                    Some(ResponseTypes::LostEvents(l)) => {
                        lost += l.num_events_lost;
                        let message = format!("upstream lost {} flows", l.num_events_lost);
                        send(&tx, "status", &StatusUpdate { lost, message });
                    }
                    Some(ResponseTypes::NodeStatus(n)) => {
                        let state = NodeState::try_from(n.state_change)
                            .map(|s| s.as_str_name())
                            .unwrap_or("NODE_STATE_UNKNOWN");
                        let message = format!("{state}: {}", n.node_names.join(", "));
                        send(&tx, "status", &StatusUpdate { lost, message });
                    }
                    None => {}
                },
                Ok(None) => {
                    let message = "the Hubble API ended the flow stream".to_owned();
                    send(&tx, "upstream-error", &StatusUpdate { lost, message });
                    return;
                }
                Err(status) => {
                    let message = format!("the Hubble API failed: {}", status.message());
                    send(&tx, "upstream-error", &StatusUpdate { lost, message });
                    return;
                }
            },
            _ = ticker.tick() => {
                if tx.is_closed() {
                    debug!(%namespace, "ui: page went away");
                    return;
                }
                map_pending |= map.take_changed() || map_sent.elapsed() >= MAP_REFRESH;
                if map_pending {
                    let snapshot = map.snapshot(started.elapsed().as_secs_f64());
                    map_pending = !send(&tx, "map", &snapshot);
                    map_sent = Instant::now();
                }
                if !rows.is_empty() && send(&tx, "flows", &FlowsUpdate { rows: &rows, skipped }) {
                    rows.clear();
                    skipped = 0;
                }
            }
        }
    }
}

/// Queue one event; false when the page is behind (it gets the next tick's).
fn send<T: Serialize>(tx: &mpsc::Sender<Result<Event, Infallible>>, name: &str, data: &T) -> bool {
    let Ok(json) = serde_json::to_string(data) else {
        return false;
    };
    match tx.try_send(Ok(Event::default().event(name).data(json))) {
        Ok(()) => true,
        Err(TrySendError::Full(_) | TrySendError::Closed(_)) => false,
    }
}
