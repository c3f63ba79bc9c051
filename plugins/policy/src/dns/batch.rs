//! DNS L7 records handed to the flow pipeline in batches.
//!
//! Each record sent on its own woke the agent's flow pipeline (another thread) once per
//! record, two per query: a futex wake and a context switch each, and allocations freed
//! on the other thread while the proxy allocated the next ones. The proxy's loops now
//! drain their sockets without waiting and publish what a drain produced at once: one
//! wake per batch.

use porin_plugin_sdk::L7Record;

use super::state::DnsShared;

/// Datagrams one loop handles before it publishes and lets the other tasks run.
pub const DRAIN_LIMIT: usize = 64;

/// Records waiting to be published.
#[derive(Default)]
pub struct RecordBatch {
    records: Vec<L7Record>,
}

impl RecordBatch {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            records: Vec::with_capacity(n),
        }
    }

    pub fn push(&mut self, record: L7Record) {
        self.records.push(record);
    }

    /// Hands every waiting record to the flow pipeline, in order.
    pub fn flush(&mut self, shared: &DnsShared) {
        for record in self.records.drain(..) {
            shared.publish(record);
        }
    }
}
