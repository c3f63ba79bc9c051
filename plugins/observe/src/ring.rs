//! The per-node flow ring: the last N flows, plus a live feed for followers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::flow::Flow;

/// A bounded ring of flows. When full, the oldest flow goes; followers that fall
/// behind are told how many flows they missed (never silently).
#[derive(Debug)]
pub struct FlowRing {
    inner: Mutex<VecDeque<Arc<Flow>>>,
    capacity: usize,
    live: broadcast::Sender<Arc<Flow>>,
}

impl FlowRing {
    pub fn new(capacity: usize) -> Self {
        let (live, _) = broadcast::channel(capacity.max(16));
        Self {
            inner: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity: capacity.max(1),
            live,
        }
    }

    /// Add a flow and hand it to followers.
    pub fn push(&self, flow: Flow) {
        let flow = Arc::new(flow);
        if let Ok(mut ring) = self.inner.lock() {
            if ring.len() == self.capacity {
                ring.pop_front();
            }
            ring.push_back(flow.clone());
        }
        // No followers is fine.
        let _ = self.live.send(flow);
    }

    /// The newest `n` flows, oldest first.
    pub fn last(&self, n: usize) -> Vec<Arc<Flow>> {
        match self.inner.lock() {
            Ok(ring) => ring
                .iter()
                .skip(ring.len().saturating_sub(n))
                .cloned()
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Flows from now on.
    pub fn follow(&self) -> broadcast::Receiver<Arc<Flow>> {
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
}
