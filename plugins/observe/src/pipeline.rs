//! The flow pipeline: datapath events in, flows into the ring.

use std::sync::Arc;
use std::time::Duration;

use hubble_proto::flow::{Flow, LostEventSource};
use porin_plugin_sdk::{DatapathEvent, EndpointMeta, PluginContext};
use porin_wasm::WasmModules;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::flow::{Clock, Enricher, enrich};
use crate::metrics::{HubbleMetrics, LostEvents};
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

/// Most flows handed to WASM modules at once: what is already queued when the
/// pipeline wakes up, so an idle pipeline adds no latency and a busy one
/// calls modules once per batch.
pub const MAX_BATCH: usize = porin_wasm::encode::MAX_BATCH;

/// Read events until the context's event channel closes: each becomes a flow,
/// goes through the WASM filters, is counted in the Hubble metrics (with the
/// labellers' labels) and stored in the ring. Events the pipeline was too slow
/// for are reported as `OBSERVER_EVENTS_QUEUE` losses, never dropped silently.
pub async fn run_pipeline(
    ctx: Arc<dyn PluginContext>,
    ring: Arc<FlowRing>,
    lost: Arc<LostEvents>,
    metrics: Option<Arc<HubbleMetrics>>,
    wasm: Option<Arc<WasmModules>>,
) {
    let mut events = ctx.subscribe_events();
    let enricher = ContextEnricher(ctx);
    let clock = Clock::now();
    loop {
        let first = match events.recv().await {
            Ok(event) => event,
            Err(RecvError::Lagged(n)) => {
                lost.record(LostEventSource::ObserverEventsQueue, n);
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let mut batch = vec![enrich(&first, &clock, &enricher)];
        while batch.len() < MAX_BATCH {
            match events.try_recv() {
                Ok(event) => batch.push(enrich(&event, &clock, &enricher)),
                Err(TryRecvError::Lagged(n)) => {
                    lost.record(LostEventSource::ObserverEventsQueue, n)
                }
                Err(_) => break,
            }
        }
        process(batch, &ring, metrics.as_deref(), wasm.as_deref());
    }
}

/// The stage after decoding: WASM filters, metrics (with labels), ring.
pub fn process(
    flows: Vec<Flow>,
    ring: &FlowRing,
    metrics: Option<&HubbleMetrics>,
    wasm: Option<&WasmModules>,
) {
    let kept: Vec<Flow> = match wasm {
        Some(w) if !w.is_empty() => {
            let keep = w.filter(&flows);
            flows
                .into_iter()
                .zip(keep)
                .filter_map(|(f, k)| k.then_some(f))
                .collect()
        }
        _ => flows,
    };
    let labels = match (wasm, metrics) {
        (Some(w), Some(_)) if w.has_labellers() => w.labels(&kept),
        _ => Vec::new(),
    };
    for (i, flow) in kept.into_iter().enumerate() {
        if let Some(m) = metrics {
            m.process_labelled(&flow, labels.get(i).map(Vec::as_slice).unwrap_or_default());
        }
        ring.push(flow);
    }
}

/// How often the kernel's lost-event total is read.
pub const KERNEL_LOSS_POLL: Duration = Duration::from_secs(1);

/// Report events the kernel could not put into the full ring buffer
/// (`PERF_EVENT_RING_BUFFER`), from core's reading of the metrics map. Losses
/// before the plugin started are not reported again.
pub async fn poll_kernel_losses(ctx: Arc<dyn PluginContext>, lost: Arc<LostEvents>) {
    let mut last = ctx.datapath_events_lost();
    let mut tick = tokio::time::interval(KERNEL_LOSS_POLL);
    loop {
        tick.tick().await;
        let now = ctx.datapath_events_lost();
        lost.record(
            LostEventSource::PerfEventRingBuffer,
            kernel_delta(last, now),
        );
        last = now;
    }
}

/// New losses between two kernel totals; a lower total means the map was
/// recreated and counts from zero.
pub fn kernel_delta(last: u64, now: u64) -> u64 {
    if now >= last { now - last } else { now }
}

/// Enrich one event without a context (tests, tools).
pub fn flow_of(event: &DatapathEvent, enricher: &dyn Enricher) -> hubble_proto::flow::Flow {
    enrich(event, &Clock::now(), enricher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_totals_become_deltas() {
        assert_eq!(kernel_delta(0, 0), 0);
        assert_eq!(kernel_delta(3, 10), 7);
        assert_eq!(kernel_delta(10, 4), 4);
    }
}
