//! Async reader of the flow event ring buffer.
//!
//! The ring buffer has a single consumer position: run one reader per node (the observe
//! plugin fans events out from there).

use std::path::Path;

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::mpsc, task::JoinHandle};
use tracing::warn;

use super::{
    abi::FlowEvent, error::DatapathError, loader::Datapath, maps::MAP_EVENTS, maps::open_pinned,
};

/// How often the reader drains the ring when no wakeup came.
pub const DRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// Reads decoded [`FlowEvent`]s from the pinned `porin_events` ring buffer.
pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl EventReader {
    /// Opens the ring buffer pinned at `path`. Needs a Tokio runtime with I/O enabled.
    pub fn open(path: &Path) -> Result<Self, DatapathError> {
        let ring =
            RingBuf::try_from(open_pinned(path)?).map_err(|e| DatapathError::map(MAP_EVENTS, e))?;
        // SAFETY: the RingBuf owns its map fd (MapData) for as long as it lives, and it lives
        // inside the AsyncFd, so the fd stays open and unchanged while registered.
        let ring = unsafe { AsyncFd::register(ring) }
            .map_err(|e| DatapathError::Events { source: e.into() })?;
        Ok(Self { ring })
    }

    /// The next event that decodes; records that do not decode are logged and skipped.
    ///
    /// The programs wake the reader only when a quarter of the ring waits
    /// (`bpf/lib/events.h`), so besides waiting for that wakeup the reader looks at the
    /// ring every [`DRAIN_INTERVAL`]: a flow reaches the agent at most that late.
    pub async fn next(&mut self) -> Result<FlowEvent, DatapathError> {
        loop {
            if let Some(event) = self.try_next() {
                return Ok(event);
            }
            let woken = tokio::time::timeout(DRAIN_INTERVAL, self.ring.readable_mut()).await;
            let Ok(guard) = woken else {
                continue;
            };
            let mut guard = guard.map_err(|source| DatapathError::Events { source })?;
            // Re-check before sleeping again: a record may have landed after try_next.
            if let Some(event) = Self::pop(guard.get_inner_mut()) {
                return Ok(event);
            }
            guard.clear_ready();
        }
    }

    /// The next event already in the ring, without waiting.
    pub fn try_next(&mut self) -> Option<FlowEvent> {
        Self::pop(self.ring.get_mut())
    }

    fn pop(ring: &mut RingBuf<MapData>) -> Option<FlowEvent> {
        while let Some(item) = ring.next() {
            match FlowEvent::decode(&item) {
                Ok(event) => return Some(event),
                Err(e) => warn!(error = %e, "skipping undecodable flow event"),
            }
        }
        None
    }

    /// Spawns a task forwarding every event into `tx`; it ends when the receiver is dropped
    /// or reading fails.
    pub fn spawn(mut self, tx: mpsc::Sender<FlowEvent>) -> JoinHandle<Result<(), DatapathError>> {
        tokio::spawn(async move {
            loop {
                let event = self.next().await?;
                if tx.send(event).await.is_err() {
                    return Ok(());
                }
            }
        })
    }
}

impl Datapath {
    /// A reader over this node's flow events.
    pub fn event_reader(&self) -> Result<EventReader, DatapathError> {
        EventReader::open(&self.map_pin_path(MAP_EVENTS))
    }
}
