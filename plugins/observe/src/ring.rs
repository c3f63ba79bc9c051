//! The per-node flow ring: the last N flows, plus a live feed for followers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hubble_proto::flow::Flow;
use tokio::sync::broadcast;

use crate::entry::FlowEntry;

/// A bounded ring of Hubble flows. When full, the oldest flow goes; followers that
/// fall behind are told how many flows they missed (never silently).
#[derive(Debug)]
pub struct FlowRing {
    inner: Mutex<VecDeque<Arc<FlowEntry>>>,
    capacity: usize,
    seen: AtomicU64,
    live: broadcast::Sender<Arc<FlowEntry>>,
}

impl FlowRing {
    pub fn new(capacity: usize) -> Self {
        let (live, _) = broadcast::channel(capacity.max(16));
        Self {
            inner: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity: capacity.max(1),
            seen: AtomicU64::new(0),
            live,
        }
    }

    /// Add a flow message and hand it to followers.
    pub fn push(&self, flow: Flow) {
        self.push_entry(Arc::new(FlowEntry::ready(flow)));
    }

    /// Add a flow and hand it to followers.
    pub fn push_entry(&self, flow: Arc<FlowEntry>) {
        if let Ok(mut ring) = self.inner.lock() {
            if ring.len() == self.capacity {
                ring.pop_front();
            }
            ring.push_back(flow.clone());
        }
        self.seen.fetch_add(1, Ordering::Relaxed);
        // No followers is fine.
        let _ = self.live.send(flow);
    }

    /// Every stored flow, oldest first.
    pub fn snapshot(&self) -> Vec<Arc<FlowEntry>> {
        match self.inner.lock() {
            Ok(ring) => ring.iter().cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Flows from now on.
    pub fn follow(&self) -> broadcast::Receiver<Arc<FlowEntry>> {
        self.live.subscribe()
    }

    /// How many flows the ring holds.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many flows it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Flows pushed since the ring was made (including those overwritten).
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_counts_all() {
        let ring = FlowRing::new(2);
        for n in ["a", "b", "c"] {
            ring.push(Flow {
                node_name: n.to_string(),
                ..Flow::default()
            });
        }
        let names: Vec<_> = ring
            .snapshot()
            .iter()
            .map(|f| f.flow().node_name.clone())
            .collect();
        assert_eq!(names, vec!["b", "c"]);
        assert_eq!((ring.seen(), ring.capacity()), (3, 2));
    }
}
