//! Starting and stopping the DNS proxy inside the agent: its sockets, its tasks (UDP,
//! upstream readers, TCP, garbage collection), and the policy view the plugin swaps in on
//! every change. The proxy runs on a runtime of its own ([`WORKER_THREADS`] threads named
//! `porin-dns`), so a busy agent (policy computation, flow pipeline, API) does not delay
//! lookups, and lookups do not delay the agent.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once, RwLock};
use std::time::Duration;

use porin_core::datapath::{Conntrack, MAP_CT};
use porin_plugin_sdk::PluginContext;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use super::server::{read_answers, serve_tcp, serve_udp, sweep_unanswered};
use super::state::{DnsShared, DnsView};
use super::upstream::Upstreams;
use crate::fqdn::{FqdnCache, FqdnLimits, persist};
use crate::proxy::{MAP_PROXY_REDIR, OriginalDestinations};

/// How often expired FQDN addresses are collected.
const GC_INTERVAL: Duration = Duration::from_secs(10);
/// How often the learned addresses are saved when they changed (what an agent killed
/// within this time had learned last is relearned from the next answers).
const SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// How long an upstream server has to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Threads of the proxy's runtime. One: on a 2-core node a second thread cost more in
/// wake-ups between the receiving loop and the answer readers than it gave
/// (`scripts/bench dns`: 47,800 queries per CPU second and +1.8 ms p99 with one, 39,600
/// and +3.2 ms with two).
pub const WORKER_THREADS: usize = 1;

/// Why the proxy could not start (the plugin reports it in its health).
#[derive(Debug, thiserror::Error)]
pub enum DnsProxyError {
    #[error("no IPv4 [agent] node_ip: the DNS proxy listens on the node IP")]
    NoNodeIp,
    #[error("starting the DNS proxy's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("binding the DNS proxy's upstream sockets: {0}")]
    Upstream(std::io::Error),
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
    upstreams: Arc<Upstreams>,
    tasks: Vec<JoinHandle<()>>,
    /// Sockets bound by [`DnsProxy::bind`] and not yet served.
    unserved: Option<Unserved>,
    /// The saved addresses are restored with the first policy view.
    restore: Once,
    /// Declared last: dropped after the tasks are aborted.
    runtime: ProxyRuntime,
    pub addr: SocketAddr,
}

struct Unserved {
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    ct_path: std::path::PathBuf,
}

impl DnsProxy {
    /// Binds the proxy's sockets without serving them. From here on the datapath
    /// redirects queries to the proxy (it looks the socket up) and they wait in the
    /// sockets' queues until [`DnsProxy::serve`]: the plugin sets the first policy view
    /// in between, so a query that arrives while a restarted agent starts is judged by the
    /// policy, never by an empty view.
    pub fn bind(
        ctx: Arc<dyn PluginContext>,
        port: u16,
        limits: FqdnLimits,
    ) -> Result<Self, DnsProxyError> {
        let Some(IpAddr::V4(ip)) = ctx.node_ip() else {
            return Err(DnsProxyError::NoNodeIp);
        };
        let runtime = ProxyRuntime::start()?;
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
        let persist_path = Some(ctx.state_dir().join(persist::FILE_NAME));
        let shared = Arc::new(DnsShared {
            view: RwLock::new(Arc::new(DnsView::default())),
            cache: Mutex::new(FqdnCache::new(limits)),
            counters: Default::default(),
            ctx,
            destinations,
            upstream_timeout: UPSTREAM_TIMEOUT,
            persist_path,
            dirty: AtomicBool::new(false),
        });
        let upstreams = Arc::new(
            Upstreams::bind(UPSTREAM_TIMEOUT, runtime.handle()?)
                .map_err(DnsProxyError::Upstream)?,
        );
        Ok(Self {
            shared,
            upstreams,
            tasks: Vec::new(),
            unserved: Some(Unserved { udp, tcp, ct_path }),
            restore: Once::new(),
            runtime,
            addr,
        })
    }

    /// Starts answering: the receiving loops, the upstream readers and garbage
    /// collection. Does nothing the second time.
    pub fn serve(&mut self) -> Result<(), DnsProxyError> {
        let Some(Unserved { udp, tcp, ct_path }) = self.unserved.take() else {
            return Ok(());
        };
        let addr = self.addr;
        let bind_err = |transport, source| DnsProxyError::Bind {
            addr,
            transport,
            source,
        };
        let handle = self.runtime.handle()?;
        let guard = handle.enter();
        let udp = Arc::new(tokio::net::UdpSocket::from_std(udp).map_err(|e| bind_err("UDP", e))?);
        let tcp = tokio::net::TcpListener::from_std(tcp).map_err(|e| bind_err("TCP", e))?;
        let (shared, upstreams) = (&self.shared, &self.upstreams);
        self.tasks = vec![
            handle.spawn(serve_udp(udp.clone(), upstreams.clone(), shared.clone())),
            handle.spawn(sweep_unanswered(
                upstreams.clone(),
                udp.clone(),
                shared.clone(),
            )),
            handle.spawn(serve_tcp(tcp, shared.clone())),
            handle.spawn(collect_garbage(shared.clone(), ct_path)),
            handle.spawn(save_learned(shared.clone())),
        ];
        for socket in &upstreams.sockets {
            self.tasks.push(handle.spawn(read_answers(
                socket.clone(),
                udp.clone(),
                shared.clone(),
            )));
        }
        drop(guard);
        info!(%addr, threads = WORKER_THREADS, "DNS proxy listening (UDP and TCP)");
        Ok(())
    }

    /// The policy changed. With the first view (the `toFQDNs` selectors' identities), the
    /// addresses a previous agent learned come back, before the plugin programs the policy
    /// and before the proxy answers.
    pub fn set_view(&self, view: DnsView) {
        self.shared.set_view(view);
        self.restore.call_once(|| {
            self.shared.restore_saved();
        });
    }

    pub fn shared(&self) -> &Arc<DnsShared> {
        &self.shared
    }

    /// UDP queries waiting for their server.
    pub fn in_flight(&self) -> usize {
        self.upstreams.in_flight()
    }
}

impl Drop for DnsProxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // A clean stop keeps what the last second learned.
        self.shared.save_if_dirty();
    }
}

/// The proxy's own runtime; dropping it stops its threads without waiting (the plugin
/// may be stopped from async code, where a runtime cannot block on its threads).
struct ProxyRuntime(Option<tokio::runtime::Runtime>);

impl ProxyRuntime {
    fn start() -> Result<Self, DnsProxyError> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("porin-dns")
            .enable_all()
            .build()
            .map(|r| Self(Some(r)))
            .map_err(DnsProxyError::Runtime)
    }

    fn handle(&self) -> Result<&tokio::runtime::Handle, DnsProxyError> {
        self.0
            .as_ref()
            .map(tokio::runtime::Runtime::handle)
            .ok_or_else(|| DnsProxyError::Runtime(std::io::Error::other("runtime stopped")))
    }
}

impl Drop for ProxyRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
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

/// Saves the learned addresses at most once per [`SAVE_INTERVAL`], when they changed.
async fn save_learned(shared: Arc<DnsShared>) {
    let mut tick = tokio::time::interval(SAVE_INTERVAL);
    loop {
        tick.tick().await;
        if shared.dirty.load(Ordering::Relaxed) {
            let shared = shared.clone();
            // File I/O off the proxy's only worker thread.
            let _ = tokio::task::spawn_blocking(move || shared.save_if_dirty()).await;
        }
    }
}

/// Removes expired FQDN addresses every [`GC_INTERVAL`], keeping those with live
/// connections. Off the proxy's only worker thread: reading a large conntrack table takes
/// one `bpf()` call per entry, and lookups must not wait behind it.
async fn collect_garbage(shared: Arc<DnsShared>, ct_path: std::path::PathBuf) {
    let mut tick = tokio::time::interval(GC_INTERVAL);
    loop {
        tick.tick().await;
        let (shared, ct_path) = (shared.clone(), ct_path.clone());
        let collected = tokio::task::spawn_blocking(move || {
            let live = live_destinations(&ct_path);
            shared.expire(&|ip| live.contains(ip))
        })
        .await;
        if let Ok(gone @ 1..) = collected {
            debug!(gone, "expired FQDN addresses removed");
        }
    }
}
