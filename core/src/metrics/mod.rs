//! Agent metrics with Cilium's names, so existing dashboards and alerts work.

mod drop_reasons;
mod map_pressure;
mod server;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::datapath::abi::REASON_EVENT_LOST;

pub use drop_reasons::drop_reason_text;
pub use map_pressure::{
    MapSample, PRESSURE_MAPS, PressureMap, PressurePlan, PressureSource, count_maps,
};
pub use server::{
    ExtraMetrics, MetricsError, OPENMETRICS_CONTENT_TYPE, metrics_router, metrics_router_with,
    serve_metrics, serve_metrics_with,
};

/// Endpoint lifecycle states, with Cilium's label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointState {
    WaitingForIdentity,
    NotReady,
    WaitingToRegenerate,
    Regenerating,
    Restoring,
    Ready,
    Disconnecting,
    Disconnected,
    Invalid,
}

impl EndpointState {
    pub const ALL: [Self; 9] = [
        Self::WaitingForIdentity,
        Self::NotReady,
        Self::WaitingToRegenerate,
        Self::Regenerating,
        Self::Restoring,
        Self::Ready,
        Self::Disconnecting,
        Self::Disconnected,
        Self::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::WaitingForIdentity => "waiting-for-identity",
            Self::NotReady => "not-ready",
            Self::WaitingToRegenerate => "waiting-to-regenerate",
            Self::Regenerating => "regenerating",
            Self::Restoring => "restoring",
            Self::Ready => "ready",
            Self::Disconnecting => "disconnecting",
            Self::Disconnected => "disconnected",
            Self::Invalid => "invalid",
        }
    }
}

/// One datapath counter, summed over CPUs or not (samples with the same reason
/// and direction are added up). Values are the kernel's absolute totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterSample {
    /// Cilium's drop reason; 0 means forwarded.
    pub reason: u8,
    /// 1 ingress, 2 egress, 3 service (Cilium's metrics map directions).
    pub direction: u8,
    pub packets: u64,
    pub bytes: u64,
}

/// Cilium's label value for a metrics map direction.
pub fn direction_label(direction: u8) -> &'static str {
    match direction {
        1 => "INGRESS",
        2 => "EGRESS",
        3 => "SERVICE",
        _ => "UNKNOWN",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    endpoint_state: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabels {
    direction: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DropLabels {
    reason: String,
    direction: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

/// Last kernel totals `(packets, bytes)` per `(reason, direction)`.
type Totals = HashMap<(u8, u8), (u64, u64)>;

/// Handles on the agent's metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    endpoint_state: Family<StateLabels, Gauge>,
    controllers_failing: Gauge,
    forward_count: Family<DirectionLabels, Counter>,
    forward_bytes: Family<DirectionLabels, Counter>,
    drop_count: Family<DropLabels, Counter>,
    drop_bytes: Family<DropLabels, Counter>,
    last_totals: Arc<Mutex<Totals>>,
    /// Kernel total of events lost to a full ring buffer, for the observe plugin.
    kernel_events_lost: Arc<AtomicU64>,
    map_pressure: Family<MapLabels, Gauge<f64, AtomicU64>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MapLabels {
    map_name: String,
}

impl AgentMetrics {
    /// Register every agent metric into `registry` (unprefixed: the names are
    /// Cilium's) and set `porin_build_info{version}` to 1.
    pub fn register(registry: &mut Registry, version: &str) -> Self {
        let metrics = Self {
            endpoint_state: Family::default(),
            controllers_failing: Gauge::default(),
            forward_count: Family::default(),
            forward_bytes: Family::default(),
            drop_count: Family::default(),
            drop_bytes: Family::default(),
            last_totals: Default::default(),
            kernel_events_lost: Default::default(),
            map_pressure: Family::default(),
        };
        registry.register(
            "cilium_bpf_map_pressure",
            "Fill percentage of map, tagged by map name",
            metrics.map_pressure.clone(),
        );
        registry.register(
            "cilium_endpoint_state",
            "Count of all endpoints, tagged by different endpoint states",
            metrics.endpoint_state.clone(),
        );
        registry.register(
            "cilium_controllers_failing",
            "Number of failing controllers",
            metrics.controllers_failing.clone(),
        );
        registry.register(
            "cilium_forward_count",
            "Total forwarded packets, tagged by ingress/egress direction",
            metrics.forward_count.clone(),
        );
        registry.register(
            "cilium_forward_bytes",
            "Total forwarded bytes, tagged by ingress/egress direction",
            metrics.forward_bytes.clone(),
        );
        registry.register(
            "cilium_drop_count",
            "Total dropped packets, tagged by drop reason and ingress/egress direction",
            metrics.drop_count.clone(),
        );
        registry.register(
            "cilium_drop_bytes",
            "Total dropped bytes, tagged by drop reason and ingress/egress direction",
            metrics.drop_bytes.clone(),
        );
        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info
            .get_or_create(&VersionLabels {
                version: version.to_string(),
            })
            .set(1);
        registry.register("porin_build_info", "Porin build information", build_info);
        for state in EndpointState::ALL {
            metrics.set_endpoint_count(state, 0);
        }
        metrics
    }

    /// How many endpoints are in `state`.
    pub fn set_endpoint_count(&self, state: EndpointState, count: i64) {
        self.endpoint_state
            .get_or_create(&StateLabels {
                endpoint_state: state.as_str().to_string(),
            })
            .set(count);
    }

    /// How full a map is: entries / max_entries (Cilium reports the same ratio).
    pub fn set_map_pressure(&self, map: &str, ratio: f64) {
        self.map_pressure
            .get_or_create(&MapLabels {
                map_name: map.to_string(),
            })
            .set(ratio);
    }

    pub fn set_controllers_failing(&self, count: i64) {
        self.controllers_failing.set(count);
    }

    /// The kernel's total of events lost to a full ring buffer (metrics map
    /// reason `REASON_EVENT_LOST`), updated by [`Self::update_datapath_counters`].
    pub fn kernel_events_lost(&self) -> Arc<AtomicU64> {
        self.kernel_events_lost.clone()
    }

    /// Feed the kernel's absolute totals. Counters advance by the difference
    /// since the previous call; a total lower than before (the map was
    /// recreated) counts as a restart from zero.
    pub fn update_datapath_counters(&self, samples: &[CounterSample]) {
        let mut totals = Totals::new();
        for s in samples {
            let t = totals.entry((s.reason, s.direction)).or_default();
            t.0 = t.0.saturating_add(s.packets);
            t.1 = t.1.saturating_add(s.bytes);
        }
        let lost: u64 = totals
            .iter()
            .filter(|((reason, _), _)| *reason == REASON_EVENT_LOST)
            .map(|(_, (packets, _))| *packets)
            .fold(0, u64::saturating_add);
        self.kernel_events_lost.store(lost, Ordering::Relaxed);
        let mut last = self
            .last_totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for ((reason, direction), (packets, bytes)) in totals {
            let (prev_packets, prev_bytes) =
                last.get(&(reason, direction)).copied().unwrap_or_default();
            let delta = |now: u64, prev: u64| if now >= prev { now - prev } else { now };
            let (dp, db) = (delta(packets, prev_packets), delta(bytes, prev_bytes));
            last.insert((reason, direction), (packets, bytes));
            let direction = direction_label(direction).to_string();
            if reason == 0 {
                let labels = DirectionLabels { direction };
                self.forward_count.get_or_create(&labels).inc_by(dp);
                self.forward_bytes.get_or_create(&labels).inc_by(db);
            } else {
                let labels = DropLabels {
                    reason: drop_reason_text(reason),
                    direction,
                };
                self.drop_count.get_or_create(&labels).inc_by(dp);
                self.drop_bytes.get_or_create(&labels).inc_by(db);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).expect("encode");
        out
    }

    fn sample(reason: u8, direction: u8, packets: u64, bytes: u64) -> CounterSample {
        CounterSample {
            reason,
            direction,
            packets,
            bytes,
        }
    }

    #[test]
    fn names_labels_and_values() {
        let mut registry = Registry::default();
        let m = AgentMetrics::register(&mut registry, "0.1.0");
        m.set_endpoint_count(EndpointState::Ready, 3);
        m.set_controllers_failing(1);
        m.update_datapath_counters(&[
            sample(0, 1, 10, 1000),
            sample(0, 1, 5, 500), // another CPU
            sample(133, 2, 2, 120),
        ]);
        m.update_datapath_counters(&[sample(0, 1, 20, 2000), sample(133, 2, 3, 180)]);
        m.set_map_pressure("porin_lb_svc", 0.25);
        let text = scrape(&registry);
        for line in [
            "cilium_endpoint_state{endpoint_state=\"ready\"} 3",
            "cilium_endpoint_state{endpoint_state=\"waiting-for-identity\"} 0",
            "cilium_controllers_failing 1",
            "cilium_forward_count_total{direction=\"INGRESS\"} 20",
            "cilium_forward_bytes_total{direction=\"INGRESS\"} 2000",
            "cilium_drop_count_total{reason=\"Policy denied\",direction=\"EGRESS\"} 3",
            "cilium_drop_bytes_total{reason=\"Policy denied\",direction=\"EGRESS\"} 180",
            "porin_build_info{version=\"0.1.0\"} 1",
            "# TYPE cilium_drop_count counter",
            "cilium_bpf_map_pressure{map_name=\"porin_lb_svc\"} 0.25",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
    }

    #[test]
    fn kernel_event_losses_are_summed_for_plugins() {
        let mut registry = Registry::default();
        let m = AgentMetrics::register(&mut registry, "dev");
        let lost = m.kernel_events_lost();
        m.update_datapath_counters(&[sample(1, 1, 3, 0), sample(1, 2, 4, 0), sample(0, 1, 9, 9)]);
        assert_eq!(lost.load(Ordering::Relaxed), 7);
        m.update_datapath_counters(&[sample(0, 1, 10, 10)]);
        assert_eq!(lost.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn counter_reset_in_kernel_keeps_counting_up() {
        let mut registry = Registry::default();
        let m = AgentMetrics::register(&mut registry, "dev");
        m.update_datapath_counters(&[sample(134, 1, 10, 100)]);
        m.update_datapath_counters(&[sample(134, 1, 4, 40)]);
        let text = scrape(&registry);
        assert!(
            text.contains(
                "cilium_drop_count_total{reason=\"Invalid packet\",direction=\"INGRESS\"} 14"
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn http_endpoint_serves_openmetrics() {
        let mut registry = Registry::default();
        AgentMetrics::register(&mut registry, "dev");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = metrics_router(Arc::new(registry));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response
                .to_lowercase()
                .contains(&format!("content-type: {OPENMETRICS_CONTENT_TYPE}"))
        );
        assert!(response.contains("porin_build_info{version=\"dev\"} 1"));
        assert!(response.trim_end().ends_with("# EOF"));
    }
}
