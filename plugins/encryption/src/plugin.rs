//! The encryption plugin's lifecycle: key, device, peers, status.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use porin_core::datapath::MAP_ENCRYPT;
use porin_plugin_sdk::{
    DatapathContribution, Health, Plugin, PluginContext, PluginError, StateChangeSummary, Switch,
    TUNNEL_DEVICE_PREFIX,
};
use serde_json::json;
use tracing::{info, warn};

use crate::EncryptionConfig;
use crate::device::{Device, DeviceSpec, device_name};
use crate::keys::{NodeKey, WgKeyTool, load_or_create};
use crate::metrics::{ErrorReason, WgMetrics};
use crate::peers::{
    ENDPOINT_ANNOTATION, PUB_KEY_ANNOTATION, own_pod_cidr, remote_pod_cidrs, wanted_peers,
};
use crate::supervisor::{Shared, lock, spawn_supervisor};
use crate::tunnel_map::TunnelMap;

/// The section name in `porin.toml`.
pub const NAME: &str = "encryption";

/// WireGuard's per-packet overhead over IPv4 (outer IP + UDP + WireGuard header + tag).
const WG_OVERHEAD: u32 = 80;
/// The underlay MTU assumed when `mtu` is unset.
const UNDERLAY_MTU: u32 = 1500;

/// The encryption plugin: WireGuard between nodes with a userspace device.
#[derive(Default)]
pub struct EncryptionPlugin {
    config: EncryptionConfig,
    health: Option<Health>,
    runtime: Option<Running>,
    metrics: WgMetrics,
}

/// What a started plugin holds.
struct Running {
    ctx: Arc<dyn PluginContext>,
    key: NodeKey,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    supervisor: Option<JoinHandle<()>>,
}

impl EncryptionPlugin {
    pub fn new() -> Self {
        Self::default()
    }

    /// The validated configuration.
    pub fn config(&self) -> &EncryptionConfig {
        &self.config
    }

    fn start_err(message: impl std::fmt::Display) -> PluginError {
        PluginError::Start {
            plugin: NAME.to_string(),
            message: message.to_string(),
        }
    }
}

impl Plugin for EncryptionPlugin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn configure(&mut self, section: &toml::Table) -> Result<(), PluginError> {
        self.config = EncryptionConfig::from_section(section)?;
        Ok(())
    }

    fn register_metrics(&mut self, registry: &mut prometheus_client::registry::Registry) {
        self.metrics.register(registry);
    }

    fn datapath(&self) -> DatapathContribution {
        DatapathContribution {
            switches: vec![
                Switch {
                    name: "CFG_ENABLE_WIREGUARD",
                    value: 1,
                },
                Switch {
                    name: "CFG_ENCRYPTION_STRICT",
                    value: u32::from(self.config.strict_mode),
                },
            ],
            maps: vec![MAP_ENCRYPT],
            // NodePort replies that come back through the tunnel (bpf/host.c).
            devices: vec![format!("{TUNNEL_DEVICE_PREFIX}{}", device_name())],
        }
    }

    fn start(&mut self, ctx: Arc<dyn PluginContext>) -> Result<(), PluginError> {
        let key =
            load_or_create(&ctx.state_dir().join(NAME), &WgKeyTool).map_err(Self::start_err)?;
        let nodes = ctx.state().nodes();
        let address = own_pod_cidr(&nodes, ctx.node_name()).and_then(|c| c.hosts().next());
        let mut device = Device::new(DeviceSpec {
            name: device_name(),
            userspace: self.config.userspace,
            private_key_path: key.private_key_path.clone(),
            public_key: key.public_key.clone(),
            listen_port: self.config.listen_port,
            mtu: self.config.mtu.unwrap_or(UNDERLAY_MTU - WG_OVERHEAD),
            address,
        });
        // The tunnel map first: in strict mode, from here on nothing to another node's pods
        // leaves in clear.
        let mut tunnel_map =
            TunnelMap::open(&ctx.map_pin_path(MAP_ENCRYPT)).map_err(Self::start_err)?;
        tunnel_map
            .sync(
                &remote_pod_cidrs(&nodes, ctx.node_name()),
                &[],
                device.name(),
            )
            .map_err(Self::start_err)?;
        device.prefer_kernel();
        if !device.adopt().map_err(Self::start_err)? {
            device.ensure().map_err(Self::start_err)?;
        }
        let attach_ctx = ctx.clone();
        let attach_program: Arc<dyn Fn(&str) + Send + Sync> = Arc::new(move |name: &str| {
            if let Err(e) = attach_ctx.attach_tunnel_program(name) {
                warn!(device = name, error = %e, "attaching the tunnel program: NodePort replies through the tunnel are lost");
            }
        });
        attach_program(device.name());
        let shared = Arc::new(Mutex::new(Shared {
            device,
            wanted: Vec::new(),
            remote_cidrs: remote_pod_cidrs(&nodes, ctx.node_name()),
            tunnel_map,
            endpoint: None,
            last_error: None,
            metrics: self.metrics.clone(),
            attach_program,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let supervisor = spawn_supervisor(shared.clone(), stop.clone()).map_err(Self::start_err)?;
        info!(plugin = NAME, public_key = %key.public_key, "started");
        self.runtime = Some(Running {
            ctx,
            key,
            shared,
            stop,
            supervisor: Some(supervisor),
        });
        self.health = Some(Health::Ok);
        self.reconcile(&StateChangeSummary::default())
    }

    fn reconcile(&mut self, _change: &StateChangeSummary) -> Result<(), PluginError> {
        let Some(running) = &self.runtime else {
            return Ok(());
        };
        let nodes = running.ctx.state().nodes();
        let wanted = wanted_peers(&nodes, running.ctx.node_name(), self.config.listen_port);
        let own_ip = nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(running.ctx.node_name()))
            .and_then(|n| {
                n.status
                    .as_ref()?
                    .addresses
                    .as_ref()?
                    .iter()
                    .find(|a| a.type_ == "InternalIP")
                    .cloned()
            })
            .and_then(|a| a.address.parse::<IpAddr>().ok());
        let mut shared = lock(&running.shared);
        shared.endpoint = own_ip.map(|ip| SocketAddr::new(ip, self.config.listen_port));
        shared.wanted = wanted.clone();
        shared.remote_cidrs = remote_pod_cidrs(&nodes, running.ctx.node_name());
        let outcome = shared
            .device
            .apply(&wanted)
            .and_then(|()| shared.sync_tunnel_map());
        match outcome {
            Ok(()) => {
                shared.last_error = None;
                self.health = Some(Health::Ok);
                Ok(())
            }
            Err(e) => {
                shared.metrics.error(ErrorReason::Configure);
                shared.last_error = Some(e.to_string());
                self.health = Some(Health::Degraded(e.to_string()));
                Err(PluginError::Reconcile {
                    plugin: NAME.to_string(),
                    message: e.to_string(),
                })
            }
        }
    }

    fn stop(&mut self) -> Result<(), PluginError> {
        if let Some(mut running) = self.runtime.take() {
            running.stop.store(true, Ordering::SeqCst);
            if let Some(handle) = running.supervisor.take() {
                let _ = handle.join();
            }
            lock(&running.shared).device.remove();
        }
        info!(plugin = NAME, "stopped");
        self.health = Some(Health::Stopped);
        Ok(())
    }

    fn health(&self) -> Health {
        self.health.clone().unwrap_or(Health::Starting)
    }

    fn node_annotations(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Some(running) = &self.runtime {
            out.insert(
                PUB_KEY_ANNOTATION.to_string(),
                running.key.public_key.clone(),
            );
            if let Some(endpoint) = lock(&running.shared).endpoint {
                out.insert(ENDPOINT_ANNOTATION.to_string(), endpoint.to_string());
            }
        }
        out
    }

    fn claimed_node_routes(&self) -> Vec<String> {
        // Every peer, applied or not: while the device restarts, traffic to a peer's
        // pods has no route rather than leaving in clear.
        self.runtime
            .as_ref()
            .map(|r| {
                lock(&r.shared)
                    .wanted
                    .iter()
                    .map(|p| p.node.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn status_json(&self) -> Option<serde_json::Value> {
        let running = self.runtime.as_ref()?;
        let mut shared = lock(&running.shared);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (dump, dump_error) = match shared.device.dump() {
            Ok(d) => (Some(d), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let peers: Vec<serde_json::Value> = dump
            .as_ref()
            .map(|d| {
                d.peers
                    .iter()
                    .map(|p| {
                        let node = shared
                            .wanted
                            .iter()
                            .find(|w| w.public_key == p.public_key)
                            .map(|w| w.node.clone());
                        json!({
                            "node": node,
                            "public_key": p.public_key,
                            "endpoint": p.endpoint,
                            "allowed_ips": p.allowed_ips,
                            "latest_handshake": p.latest_handshake,
                            "latest_handshake_seconds_ago": p.latest_handshake.map(|t| now.saturating_sub(t)),
                            "rx_bytes": p.rx_bytes,
                            "tx_bytes": p.tx_bytes,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(json!({
            "node": running.ctx.node_name(),
            "type": "wireguard",
            "implementation": shared.device.implementation(),
            "device": shared.device.name(),
            "public_key": running.key.public_key,
            "listen_port": dump.as_ref().map_or(self.config.listen_port, |d| d.listen_port),
            "endpoint": shared.endpoint.map(|e| e.to_string()),
            "device_restarts": shared.device.restarts,
            "strict_mode": self.config.strict_mode,
            "peers": peers,
            "error": dump_error.or_else(|| shared.last_error.clone()),
        }))
    }
}
