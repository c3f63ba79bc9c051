//! The flow pipeline: datapath events in, flows into the ring.

use std::sync::Arc;

use porin_plugin_sdk::{DatapathEvent, EndpointMeta, PluginContext};
use tokio::sync::broadcast::error::RecvError;
use tracing::warn;

use crate::flow::{Clock, Enricher, enrich};
use crate::ring::FlowRing;

struct ContextEnricher(Arc<dyn PluginContext>);

impl Enricher for ContextEnricher {
    fn node_name(&self) -> &str {
        self.0.node_name()
    }
    fn endpoint(&self, ip: std::net::IpAddr) -> Option<EndpointMeta> {
        self.0.resolve_endpoint(ip)
    }
    fn identity_labels(&self, identity: u32) -> Option<Vec<String>> {
        self.0.identity_labels(identity)
    }
}

/// Read events until the context's event channel closes. Events the pipeline was
/// too slow for are counted in `lost` and logged, never dropped silently.
pub async fn run_pipeline(
    ctx: Arc<dyn PluginContext>,
    ring: Arc<FlowRing>,
    lost: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut events = ctx.subscribe_events();
    let enricher = ContextEnricher(ctx);
    let clock = Clock::now();
    loop {
        match events.recv().await {
            Ok(event) => ring.push(enrich(&event, &clock, &enricher)),
            Err(RecvError::Lagged(n)) => {
                lost.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                warn!(
                    lost = n,
                    "flow pipeline fell behind the datapath; events lost"
                );
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Enrich one event without a context (tests, tools).
pub fn flow_of(event: &DatapathEvent, enricher: &dyn Enricher) -> hubble_proto::flow::Flow {
    enrich(event, &Clock::now(), enricher)
}
