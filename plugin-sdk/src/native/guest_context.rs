//! The [`PluginContext`] a native plugin sees: the plain facts the agent sent at start,
//! datapath events the agent pushes through the ABI, and lookups through host callbacks.

use std::ffi::c_void;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::abi::{HostCallbacks, OK, write_to_vec};
use super::wire::StartInfo;
use crate::{ClusterState, DatapathEvent, EndpointMeta, PluginContext};

/// The agent's callbacks. The agent keeps `host` alive and its callbacks thread-safe
/// until the plugin is destroyed.
#[derive(Clone, Copy)]
pub struct HostHandle(pub HostCallbacks);

// SAFETY: the agent's callbacks are thread-safe and their data outlives the plugin.
unsafe impl Send for HostHandle {}
// SAFETY: as above.
unsafe impl Sync for HostHandle {}

pub struct GuestContext {
    info: StartInfo,
    events: broadcast::Sender<Arc<DatapathEvent>>,
    host: HostHandle,
}

impl GuestContext {
    pub fn new(
        info: StartInfo,
        events: broadcast::Sender<Arc<DatapathEvent>>,
        host: HostHandle,
    ) -> Self {
        Self { info, events, host }
    }

    fn ask(&self, call: impl FnOnce(*const c_void, *mut c_void) -> i32) -> Option<Vec<u8>> {
        let mut buf: Vec<u8> = Vec::new();
        let code = call(self.host.0.host, (&raw mut buf).cast());
        (code == OK).then_some(buf)
    }
}

impl PluginContext for GuestContext {
    fn node_name(&self) -> &str {
        &self.info.node_name
    }

    fn state_dir(&self) -> PathBuf {
        self.info.state_dir.clone()
    }

    fn run_dir(&self) -> PathBuf {
        self.info.run_dir.clone()
    }

    fn map_pin_path(&self, map: &str) -> PathBuf {
        self.info.map_dir.join(map)
    }

    fn subscribe_events(&self) -> broadcast::Receiver<Arc<DatapathEvent>> {
        self.events.subscribe()
    }

    fn resolve_endpoint(&self, ip: IpAddr) -> Option<EndpointMeta> {
        let text = ip.to_string();
        let json = self.ask(|host, out| {
            // SAFETY: the agent's callback; `text` and `out` live through the call.
            unsafe {
                (self.host.0.resolve_endpoint)(host, text.as_ptr(), text.len(), out, write_to_vec)
            }
        })?;
        serde_json::from_slice(&json).ok()
    }

    fn identity_labels(&self, identity: u32) -> Option<Vec<String>> {
        let json = self.ask(|host, out| {
            // SAFETY: the agent's callback; `out` lives through the call.
            unsafe { (self.host.0.identity_labels)(host, identity, out, write_to_vec) }
        })?;
        serde_json::from_slice(&json).ok()
    }

    /// Native plugins read cluster objects through `reconcile` summaries and the
    /// lookups above; the full object store does not cross the C ABI.
    fn state(&self) -> Arc<dyn ClusterState> {
        Arc::new(crate::state::EmptyState)
    }
}
