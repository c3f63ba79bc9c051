//! The state the plugin and its supervisor thread share, and the supervisor: every second
//! it restarts a dead device process and re-applies what it lost, points the tunnel map at
//! the device as it is, and feeds the metrics from the device's dump.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::Ipv4Net;
use tracing::{error, warn};

use crate::device::Device;
use crate::metrics::{ErrorReason, WgMetrics};
use crate::peers::Peer;
use crate::tunnel_map::TunnelMap;

/// How often the supervisor checks that the device process is alive.
const SUPERVISE_EVERY: Duration = Duration::from_secs(1);

/// State the supervisor thread and the plugin share.
pub struct Shared {
    pub device: Device,
    pub wanted: Vec<Peer>,
    /// Every other node's pod CIDR (strict mode guards them all).
    pub remote_cidrs: Vec<Ipv4Net>,
    /// The datapath map of what leaves through the device (flows marked encrypted;
    /// strict mode drops what would not).
    pub tunnel_map: TunnelMap,
    pub endpoint: Option<SocketAddr>,
    pub last_error: Option<String>,
    pub metrics: WgMetrics,
    /// Asks core to attach the tunnel program to the device (after it was made or remade).
    pub attach_program: Arc<dyn Fn(&str) + Send + Sync>,
}

impl Shared {
    /// Point the tunnel map at the device as it is now (its ifindex changes when it is
    /// remade; 0 while it is gone, which in strict mode drops everything to remote pods).
    pub fn sync_tunnel_map(&mut self) -> Result<(), crate::WgError> {
        let node_addresses: Vec<_> = self.wanted.iter().filter_map(|p| p.node_ip).collect();
        self.tunnel_map
            .sync(&self.remote_cidrs, &node_addresses, self.device.name())
    }
}

pub fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One supervisor pass: restart a dead device and re-apply what it lost, point the tunnel map
/// at the device as it is, and feed the metrics from its dump.
fn supervise_once(state: &mut Shared) {
    let ensured = state.device.ensure();
    // Before re-applying routes: the remade device has a new ifindex.
    if let Err(e) = state.sync_tunnel_map() {
        error!(error = %e, "updating the tunnel map");
        state.metrics.error(ErrorReason::TunnelMap);
        state.last_error = Some(e.to_string());
    }
    match ensured {
        Ok(false) => {}
        Ok(true) => {
            state.metrics.restarted();
            (state.attach_program)(state.device.name());
            let wanted = state.wanted.clone();
            if let Err(e) = state.device.apply(&wanted) {
                error!(error = %e, "re-applying WireGuard peers after a restart");
                state.metrics.error(ErrorReason::Configure);
                state.last_error = Some(e.to_string());
            }
        }
        Err(e) => {
            warn!(error = %e, "WireGuard device is down; retrying");
            state.metrics.error(ErrorReason::DeviceDown);
            state.last_error = Some(e.to_string());
            return;
        }
    }
    match state.device.dump() {
        Ok(dump) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let wanted = &state.wanted;
            state.metrics.observe(
                &dump,
                |key| {
                    wanted
                        .iter()
                        .find(|p| p.public_key == key)
                        .map(|p| p.node.clone())
                },
                now,
            );
        }
        Err(e) => {
            warn!(error = %e, "reading the WireGuard device");
            state.metrics.error(ErrorReason::Status);
        }
    }
}

/// Restart the device process when it dies and re-apply the peers and routes it lost.
pub fn spawn_supervisor(
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, std::io::Error> {
    std::thread::Builder::new()
        .name("wg-supervisor".to_string())
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(SUPERVISE_EVERY);
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                supervise_once(&mut lock(&shared));
            }
        })
}
