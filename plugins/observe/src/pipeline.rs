//! The flow pipeline: datapath events in, flows into the ring.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hubble_proto::flow::{Flow, LostEventSource};
use porin_plugin_sdk::{DatapathEvent, EndpointMeta, L7Record, PluginContext};
use porin_wasm::WasmModules;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::dns_names::DnsNames;
use crate::endpoints::{CacheSettings, EndpointCache};
use crate::entry::FlowEntry;
use crate::flow::{Clock, Enricher, enrich, next_seq};
use crate::l7_flow::next_l7_seq;
use crate::metrics::{HubbleMetrics, LostEvents};
use crate::policies::PolicyCache;
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
    fn policy(&self, id: u32) -> Option<porin_plugin_sdk::PolicyInfo> {
        self.0.policy(id)
    }
}

/// Turns events into ring entries: endpoints resolved through the cache, the
/// kernel's clock turned into wall-clock time.
#[derive(Debug)]
pub struct Pipeline {
    node: Arc<str>,
    clock: Clock,
    endpoints: EndpointCache,
    /// Names of addresses from the DNS proxy's answers, for `*_names`.
    names: DnsNames,
    /// Policies named by policy verdicts and deny drops.
    policies: PolicyCache,
}

impl Pipeline {
    pub fn new(node: &str, settings: CacheSettings) -> Self {
        Self {
            node: Arc::from(node),
            clock: Clock::now(),
            endpoints: EndpointCache::new(settings),
            names: DnsNames::default(),
            policies: PolicyCache::new(settings),
        }
    }

    /// The ring entry of one L7 record of the proxy, its endpoints resolved now
    /// (its message is built when something reads it).
    pub fn l7_entry(&mut self, record: Arc<L7Record>, ctx: &dyn Enricher) -> FlowEntry {
        let now = Instant::now();
        self.names.learn(&record, now);
        let client = self
            .endpoints
            .resolve(record.src.ip(), record.src_identity, now, ctx);
        let server = self
            .endpoints
            .resolve(record.dst.ip(), record.dst_identity, now, ctx);
        FlowEntry::l7(record, next_l7_seq(), self.node.clone(), client, server)
    }

    /// The ring entry of one event, its endpoints resolved now.
    pub fn entry(&mut self, event: &DatapathEvent, ctx: &dyn Enricher) -> FlowEntry {
        let now = Instant::now();
        let source = self
            .endpoints
            .resolve(event.src, event.src_identity, now, ctx);
        let destination = self
            .endpoints
            .resolve(event.dst, event.dst_identity, now, ctx);
        FlowEntry::new(
            event.clone(),
            self.clock.wall(event.ktime_ns),
            next_seq(),
            self.node.clone(),
            source,
            destination,
        )
        .with_names(
            self.names.get(event.dst, event.src, now),
            self.names.get(event.src, event.dst, now),
        )
        .with_policy(if event.policy_id == 0 {
            None
        } else {
            self.policies.resolve(event.policy_id, now, ctx)
        })
    }
}

/// Most flows handed to WASM modules at once: what is already queued when the
/// pipeline wakes up, so an idle pipeline adds no latency and a busy one
/// calls modules once per batch.
pub const MAX_BATCH: usize = porin_wasm::encode::MAX_BATCH;

/// After a batch smaller than [`MAX_BATCH`] the pipeline waits this long before it reads
/// again, so what arrives meanwhile is one batch: producers (the DNS and HTTP proxies,
/// the datapath event reader) then rarely find the pipeline waiting and rarely pay a
/// cross-thread wakeup per record. A flow reaches the ring at most this much later.
pub const COALESCE_WINDOW: std::time::Duration = std::time::Duration::from_millis(5);

/// Waits out [`COALESCE_WINDOW`] after a batch that did not fill up.
async fn coalesce(batch_len: usize) {
    if batch_len < MAX_BATCH {
        tokio::time::sleep(COALESCE_WINDOW).await;
    }
}

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
    let mut l7 = ctx.subscribe_l7();
    let enricher = ContextEnricher(ctx);
    let mut pipeline = Pipeline::new(enricher.node_name(), CacheSettings::default());
    loop {
        let first = tokio::select! {
            event = events.recv() => event,
            Some(record) = next_l7(&mut l7, &lost) => {
                let mut batch = vec![pipeline.l7_entry(record, &enricher)];
                while batch.len() < MAX_BATCH {
                    match l7.as_mut().map(Receiver::try_recv) {
                        Some(Ok(record)) => batch.push(pipeline.l7_entry(record, &enricher)),
                        Some(Err(TryRecvError::Lagged(n))) => {
                            lost.record(LostEventSource::ObserverEventsQueue, n)
                        }
                        _ => break,
                    }
                }
                let len = batch.len();
                process(batch, &ring, metrics.as_deref(), wasm.as_deref());
                coalesce(len).await;
                continue;
            }
        };
        let first = match first {
            Ok(event) => event,
            Err(RecvError::Lagged(n)) => {
                lost.record(LostEventSource::ObserverEventsQueue, n);
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let mut batch = vec![pipeline.entry(&first, &enricher)];
        while batch.len() < MAX_BATCH {
            match events.try_recv() {
                Ok(event) => batch.push(pipeline.entry(&event, &enricher)),
                Err(TryRecvError::Lagged(n)) => {
                    lost.record(LostEventSource::ObserverEventsQueue, n)
                }
                Err(_) => break,
            }
        }
        let len = batch.len();
        process(batch, &ring, metrics.as_deref(), wasm.as_deref());
        coalesce(len).await;
    }
}

/// The next L7 record; pending forever without a channel or once it closed,
/// and records the pipeline fell behind on are counted as lost.
async fn next_l7(
    l7: &mut Option<Receiver<Arc<L7Record>>>,
    lost: &LostEvents,
) -> Option<Arc<L7Record>> {
    loop {
        let Some(rx) = l7.as_mut() else {
            return std::future::pending().await;
        };
        match rx.recv().await {
            Ok(record) => return Some(record),
            Err(RecvError::Lagged(n)) => lost.record(LostEventSource::ObserverEventsQueue, n),
            Err(RecvError::Closed) => *l7 = None,
        }
    }
}

/// The stage after decoding: WASM filters, metrics (with the labellers' labels), ring.
/// Without modules the Hubble message of an entry is built only when something reads
/// it; modules read every flow, so with them each message is built here.
pub fn process(
    entries: Vec<FlowEntry>,
    ring: &FlowRing,
    metrics: Option<&HubbleMetrics>,
    wasm: Option<&WasmModules>,
) {
    let Some(wasm) = wasm.filter(|w| !w.is_empty()) else {
        for entry in entries {
            if let Some(m) = metrics {
                m.process(entry.flow());
            }
            ring.push_entry(Arc::new(entry));
        }
        return;
    };
    let flows: Vec<Flow> = entries.iter().map(|e| e.flow().clone()).collect();
    let keep = wasm.filter(&flows);
    let (kept_entries, kept_flows): (Vec<FlowEntry>, Vec<Flow>) = entries
        .into_iter()
        .zip(flows)
        .zip(keep)
        .filter_map(|(pair, k)| k.then_some(pair))
        .unzip();
    let labels = match metrics {
        Some(_) if wasm.has_labellers() => wasm.labels(&kept_flows),
        _ => Vec::new(),
    };
    for (i, entry) in kept_entries.into_iter().enumerate() {
        if let Some(m) = metrics {
            m.process_labelled(
                entry.flow(),
                labels.get(i).map(Vec::as_slice).unwrap_or_default(),
            );
        }
        ring.push_entry(Arc::new(entry));
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

    use std::sync::Mutex;

    use porin_plugin_sdk::{Direction, EventKind, Verdict};

    /// Pods that can be deleted between two events.
    struct Pods(Mutex<Option<EndpointMeta>>);

    impl Enricher for Pods {
        fn node_name(&self) -> &str {
            "node-1"
        }
        fn endpoint(&self, ip: std::net::IpAddr) -> Option<EndpointMeta> {
            let pods = self.0.lock().expect("lock");
            pods.clone().filter(|_| ip.to_string() == "10.200.1.5")
        }
        fn identity_labels(&self, _identity: u32) -> Option<Vec<String>> {
            None
        }
    }

    fn fin_from(src: &str) -> DatapathEvent {
        DatapathEvent {
            ktime_ns: 5,
            kind: EventKind::TcpFlags,
            verdict: Verdict::Forwarded,
            drop_reason: 0,
            direction: Direction::FromEndpoint,
            protocol: 6,
            src: src.parse().expect("ip"),
            dst: "10.200.2.9".parse().expect("ip"),
            src_port: 40000,
            dst_port: 80,
            tcp_flags: 0x01,
            icmp_type: 0,
            icmp_code: 0,
            ifindex: 4,
            src_identity: 0,
            dst_identity: 0,
            endpoint_id: 3,
            is_reply: false,
            encrypted: false,
            packet_len: 52,
            policy_id: 0,
            policy_match: 0,
        }
    }

    /// `shop/web-7d9` at 10.200.1.5 (see [`Pods`]), identity 4242.
    fn web_pod() -> Pods {
        Pods(Mutex::new(Some(EndpointMeta {
            id: 3,
            namespace: "shop".to_string(),
            pod_name: "web-7d9".to_string(),
            identity: 4242,
            labels: vec!["k8s:app=web".to_string()],
            node_name: "node-1".to_string(),
            workload: Some(("Deployment".to_string(), "web".to_string())),
        })))
    }

    #[test]
    fn the_last_flows_of_a_deleted_pod_still_name_it() {
        let pods = web_pod();
        let mut pipeline = Pipeline::new(
            "node-1",
            CacheSettings {
                refresh: Duration::ZERO,
                ..CacheSettings::default()
            },
        );
        let first = pipeline.entry(&fin_from("10.200.1.5"), &pods);
        // The pod goes; its FIN was still queued.
        *pods.0.lock().expect("lock") = None;
        let last = pipeline.entry(&fin_from("10.200.1.5"), &pods);
        for entry in [&first, &last] {
            let src = entry.flow().source.clone().expect("source");
            assert_eq!(
                (src.namespace.as_str(), src.pod_name.as_str()),
                ("shop", "web-7d9")
            );
            assert_eq!(src.identity, 4242);
            assert_eq!(src.workloads[0].name, "web");
        }
        assert_ne!(first.flow().uuid, last.flow().uuid);
        assert_eq!(last.flow().node_name, "node-1");
    }

    #[test]
    fn an_l7_record_becomes_its_flow_when_read() {
        let pods = web_pod();
        let mut pipeline = Pipeline::new("node-1", CacheSettings::default());
        let mut answer =
            crate::dns_names::test_records::dns_answer("10.200.1.5", &["192.0.2.10"], 60);
        answer.dst_identity = 1001;
        answer.latency_ns = 7;
        let mut query = answer.clone();
        query.kind = porin_plugin_sdk::L7Kind::Request;
        query.latency_ns = 0;
        let request = pipeline.l7_entry(Arc::new(query), &pods);
        let response = pipeline.l7_entry(Arc::new(answer), &pods);
        // The pod goes before anything reads the flows: they keep what was resolved.
        *pods.0.lock().expect("lock") = None;
        let req = request.flow();
        let src = req.source.as_ref().expect("source");
        assert_eq!((src.pod_name.as_str(), src.identity), ("web-7d9", 4242));
        assert_eq!(req.destination.as_ref().map(|d| d.identity), Some(1001));
        assert_eq!(req.node_name, "node-1");
        let resp = response.to_flow();
        let dst = resp.destination.as_ref().expect("destination");
        assert_eq!(dst.pod_name, "web-7d9");
        assert_eq!(resp.l7.as_ref().map(|l| l.latency_ns), Some(7));
        assert_ne!(req.uuid, resp.uuid);
        assert_eq!(request.time(), system_time_of(req));
        // The answer's address now names the flows of that client.
        let names = pipeline.names.get(
            "10.200.1.5".parse().expect("ip"),
            "192.0.2.10".parse().expect("ip"),
            Instant::now(),
        );
        assert_eq!(
            names.as_deref(),
            Some(
                &[
                    "data.example.com".to_string(),
                    "bucket.example.com".to_string()
                ][..]
            )
        );
    }

    fn system_time_of(flow: &Flow) -> std::time::SystemTime {
        crate::flow::system_time(flow.time.as_ref().expect("time"))
    }

    #[test]
    fn kernel_totals_become_deltas() {
        assert_eq!(kernel_delta(0, 0), 0);
        assert_eq!(kernel_delta(3, 10), 7);
        assert_eq!(kernel_delta(10, 4), 4);
    }
}
