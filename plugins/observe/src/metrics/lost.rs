//! Lost events, never silent: counted as `hubble_lost_events_total{source}` and
//! reported in-band to GetFlows readers as `lost_events` responses.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use hubble_proto::flow::{LostEvent, LostEventSource};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::broadcast;
use tracing::warn;

use super::Labels;

/// How many loss reports stay around for readers that ask for stored flows.
const RECENT: usize = 64;

/// A loss, when it was noticed.
#[derive(Debug, Clone, PartialEq)]
pub struct LostRecord {
    pub time: SystemTime,
    pub event: LostEvent,
}

/// The agent's lost-event accounting, shared by the pipeline, the kernel
/// counter poller and the Hubble API.
#[derive(Debug)]
pub struct LostEvents {
    counter: Family<Labels, Counter>,
    recent: Mutex<VecDeque<LostRecord>>,
    live: broadcast::Sender<LostRecord>,
}

impl Default for LostEvents {
    fn default() -> Self {
        Self::new()
    }
}

impl LostEvents {
    pub fn new() -> Self {
        let counter = Family::default();
        let lost = Self {
            counter,
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            live: broadcast::channel(RECENT).0,
        };
        // Every source is visible at 0, so alerts can tell "none" from "unknown".
        for source in [
            LostEventSource::PerfEventRingBuffer,
            LostEventSource::ObserverEventsQueue,
            LostEventSource::HubbleRingBuffer,
        ] {
            lost.counter.get_or_create(&labels(source)).inc_by(0);
        }
        lost
    }

    /// Register `hubble_lost_events_total` into `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "hubble_lost_events",
            "Number of lost events",
            self.counter.clone(),
        );
    }

    /// `n` events lost before they became flows (kernel ring buffer or
    /// pipeline queue): counted, logged and reported to every reader.
    pub fn record(&self, source: LostEventSource, n: u64) {
        if n == 0 {
            return;
        }
        self.counter.get_or_create(&labels(source)).inc_by(n);
        warn!(source = source.as_str_name(), lost = n, "flow events lost");
        let record = LostRecord {
            time: SystemTime::now(),
            event: LostEvent {
                source: source as i32,
                num_events_lost: n,
                cpu: None,
            },
        };
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(record.clone());
        }
        // No reader following is fine: the record stays in `recent`.
        let _ = self.live.send(record);
    }

    /// `n` flows one GetFlows reader fell behind on (the reader is told
    /// in-band by the Observer; other readers did not lose them).
    pub fn record_reader(&self, n: u64) {
        self.counter
            .get_or_create(&labels(LostEventSource::HubbleRingBuffer))
            .inc_by(n);
    }

    /// Losses from now on.
    pub fn follow(&self) -> broadcast::Receiver<LostRecord> {
        self.live.subscribe()
    }

    /// The last reported losses, oldest first.
    pub fn recent(&self) -> Vec<LostRecord> {
        self.recent
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The total counted for `source`.
    pub fn total(&self, source: LostEventSource) -> u64 {
        self.counter.get_or_create(&labels(source)).get()
    }
}

fn labels(source: LostEventSource) -> Labels {
    vec![("source".to_string(), source.as_str_name().to_string())]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::testing::{has_line, scrape};

    #[test]
    fn losses_are_counted_per_source_and_broadcast() {
        let mut registry = Registry::default();
        let lost = LostEvents::new();
        lost.register(&mut registry);
        let mut live = lost.follow();
        lost.record(LostEventSource::PerfEventRingBuffer, 5);
        lost.record(LostEventSource::ObserverEventsQueue, 0);
        lost.record(LostEventSource::ObserverEventsQueue, 2);
        lost.record_reader(3);
        let text = scrape(&registry);
        for line in [
            "hubble_lost_events_total{source=\"PERF_EVENT_RING_BUFFER\"} 5",
            "hubble_lost_events_total{source=\"OBSERVER_EVENTS_QUEUE\"} 2",
            "hubble_lost_events_total{source=\"HUBBLE_RING_BUFFER\"} 3",
        ] {
            assert!(has_line(&text, line), "missing {line} in\n{text}");
        }
        let first = live.try_recv().expect("a live record");
        assert_eq!(first.event.num_events_lost, 5);
        assert_eq!(
            first.event.source,
            LostEventSource::PerfEventRingBuffer as i32
        );
        // Reader lag is the reader's own business: not broadcast to others.
        assert_eq!(lost.recent().len(), 2);
        assert_eq!(lost.total(LostEventSource::HubbleRingBuffer), 3);
    }
}
