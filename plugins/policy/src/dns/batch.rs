//! DNS L7 records handed to the flow pipeline in batches.
//!
//! Each record sent on its own woke the agent's flow pipeline (another thread) once per
//! record, two per query: a futex wake and a context switch each, and allocations freed
//! on the other thread while the proxy allocated the next ones. The proxy's loops now
//! drain their sockets without waiting and publish what a drain produced at once: one
//! wake per batch. Without a reader (the observe plugin off) no record is built at all.

use porin_plugin_sdk::L7Record;

use super::state::DnsShared;

/// Datagrams one loop handles before it publishes and lets the other tasks run.
pub const DRAIN_LIMIT: usize = 64;

/// Records waiting to be published.
pub struct RecordBatch {
    records: Vec<L7Record>,
    /// Something reads the records (asked at the start of every drain).
    wanted: bool,
}

impl RecordBatch {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            records: Vec::with_capacity(capacity),
            wanted: true,
        }
    }

    /// A drain starts: asks whether records are read (the observe plugin may start or stop
    /// while the proxy runs).
    pub fn begin(&mut self, shared: &DnsShared) {
        self.wanted = shared.ctx.l7_wanted();
    }

    /// Adds the record `build` makes, when something reads records.
    pub fn push(&mut self, build: impl FnOnce() -> L7Record) {
        if self.wanted {
            self.records.push(build());
        }
    }

    /// Hands every waiting record to the flow pipeline, in order.
    pub fn flush(&mut self, shared: &DnsShared) {
        for record in self.records.drain(..) {
            shared.publish(record);
        }
    }
}
