//! Starting and stopping the DNS proxy inside the agent: its sockets, its tasks (UDP,
//! TCP, garbage collection), and the policy view the plugin swaps in on every change.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use porin_core::datapath::{Conntrack, MAP_CT};
use porin_plugin_sdk::PluginContext;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use super::server::{serve_tcp, serve_udp};
use super::state::{DnsShared, DnsView};
use crate::fqdn::{FqdnCache, FqdnLimits};
use crate::proxy::{MAP_PROXY_REDIR, OriginalDestinations};

/// How often expired FQDN addresses are collected.
const GC_INTERVAL: Duration = Duration::from_secs(10);
/// How long an upstream server has to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the proxy could not start (the plugin reports it in its health).
#[derive(Debug, thiserror::Error)]
pub enum DnsProxyError {
    #[error("no IPv4 [agent] node_ip: the DNS proxy listens on the node IP")]
    NoNodeIp,
    #[error("no tokio runtime to run the DNS proxy on")]
    NoRuntime,
    #[error("binding the DNS proxy on {addr} ({transport}): {source}")]
    Bind {
        addr: SocketAddr,
        transport: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Map(#[from] crate::proxy::OriginalDestinationError),
}

/// The running proxy; dropping it stops its tasks and closes its sockets.
pub struct DnsProxy {
    shared: Arc<DnsShared>,
    tasks: Vec<JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl DnsProxy {
    pub fn start(
        ctx: Arc<dyn PluginContext>,
        port: u16,
        limits: FqdnLimits,
    ) -> Result<Self, DnsProxyError> {
        let Some(IpAddr::V4(ip)) = ctx.node_ip() else {
            return Err(DnsProxyError::NoNodeIp);
        };
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| DnsProxyError::NoRuntime)?;
        let addr = SocketAddr::from((ip, port));
        let bind_err = |transport, source| DnsProxyError::Bind {
            addr,
            transport,
            source,
        };
        let udp = std::net::UdpSocket::bind(addr).map_err(|e| bind_err("UDP", e))?;
        udp.set_nonblocking(true).map_err(|e| bind_err("UDP", e))?;
        let tcp = std::net::TcpListener::bind(addr).map_err(|e| bind_err("TCP", e))?;
        tcp.set_nonblocking(true).map_err(|e| bind_err("TCP", e))?;
        let destinations = OriginalDestinations::open(&ctx.map_pin_path(MAP_PROXY_REDIR))?;
        let ct_path = ctx.map_pin_path(MAP_CT);
        let shared = Arc::new(DnsShared {
            view: RwLock::new(Arc::new(DnsView::default())),
            cache: Mutex::new(FqdnCache::new(limits)),
            counters: Default::default(),
            ctx,
            destinations,
            upstream_timeout: UPSTREAM_TIMEOUT,
        });
        let _guard = runtime.enter();
        let udp = tokio::net::UdpSocket::from_std(udp).map_err(|e| bind_err("UDP", e))?;
        let tcp = tokio::net::TcpListener::from_std(tcp).map_err(|e| bind_err("TCP", e))?;
        let tasks = vec![
            runtime.spawn(serve_udp(Arc::new(udp), shared.clone())),
            runtime.spawn(serve_tcp(tcp, shared.clone())),
            runtime.spawn(collect_garbage(shared.clone(), ct_path)),
        ];
        info!(%addr, "DNS proxy listening (UDP and TCP)");
        Ok(Self {
            shared,
            tasks,
            addr,
        })
    }

    /// The policy changed.
    pub fn set_view(&self, view: DnsView) {
        self.shared.set_view(view);
    }

    pub fn shared(&self) -> &Arc<DnsShared> {
        &self.shared
    }
}

impl Drop for DnsProxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Destinations of live conntrack entries (IPv4), read once per collection.
fn live_destinations(ct_path: &std::path::Path) -> BTreeSet<IpAddr> {
    let entries = match Conntrack::open(ct_path).and_then(|ct| ct.entries()) {
        Ok(e) => e,
        Err(e) => {
            debug!(error = %e, "reading conntrack for FQDN garbage collection");
            return BTreeSet::new();
        }
    };
    entries
        .iter()
        .filter(|(k, _)| k.family == 4)
        .flat_map(|(k, _)| {
            [
                IpAddr::from([k.daddr[0], k.daddr[1], k.daddr[2], k.daddr[3]]),
                IpAddr::from([k.saddr[0], k.saddr[1], k.saddr[2], k.saddr[3]]),
            ]
        })
        .collect()
}

async fn collect_garbage(shared: Arc<DnsShared>, ct_path: std::path::PathBuf) {
    let mut tick = tokio::time::interval(GC_INTERVAL);
    loop {
        tick.tick().await;
        let live = live_destinations(&ct_path);
        let gone = shared.expire(&|ip| live.contains(ip));
        if gone > 0 {
            debug!(gone, "expired FQDN addresses removed");
        }
    }
}
