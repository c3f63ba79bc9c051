//! `porin agent`: start-up, the reconcile loop and shutdown.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use porin_plugin_sdk::{DatapathEvent, Plugin, PluginContext, StateChangeSummary};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::cluster::{self, ClusterView, NodeRoute};
use super::context::{CoreContext, L7_QUEUE};
use super::endpoints::EndpointManager;
use super::error::AgentError;
use crate::api::{EndpointState, serve_api};
use crate::config::{AgentConfig, Config, Datastore as DatastoreKind};
use crate::datapath::{Datapath, DatapathConfig, SocketLb, cgroup2_root};
use crate::identity::{IdentityAllocator, ReservedIdentity};
use crate::ipcache::{Ipcache, Source};
use crate::metrics::AgentMetrics;
use crate::plugins::PluginManager;
use crate::state::{Datastore, StateStore};
use prometheus_client::registry::Registry;

/// Everything the running agent holds. Locks are short and never held across
/// an await; the order, where two are taken, is datapath_extras → endpoints →
/// identities → datapath → ipcache. Anything else takes one lock at a time: the status
/// API once held the datapath while taking the endpoints, and an agent whose first
/// reconcile met a status request deadlocked at start.
pub(crate) struct Agent {
    pub config: AgentConfig,
    pub started: Instant,
    pub store: StateStore,
    pub datastore: Arc<dyn Datastore>,
    pub datastore_kind: &'static str,
    pub datapath: Mutex<Datapath>,
    pub endpoints: Mutex<EndpointManager>,
    pub identities: Mutex<IdentityAllocator>,
    pub ipcache: Arc<Mutex<Ipcache>>,
    pub plugins: Mutex<PluginManager>,
    /// The configuration file, read again on reload.
    pub config_path: std::path::PathBuf,
    /// The plugin sections last applied (used to turn a plugin on again).
    pub plugin_sections:
        Mutex<std::collections::BTreeMap<&'static str, crate::config::PluginSection>>,
    /// The context plugins started with; set once plugins start.
    pub plugin_ctx: std::sync::OnceLock<Arc<dyn PluginContext>>,
    /// Node device program and socket LB, following the enabled plugins.
    pub datapath_extras: Mutex<super::toggle::DatapathExtras>,
    pub routes: Mutex<Vec<NodeRoute>>,
    /// The plugins' annotations on this node's published Node object, as last published.
    pub node_annotations: Mutex<std::collections::BTreeMap<String, String>>,
    /// Policy enforcement (ingress, egress) last published per local endpoint id.
    pub endpoint_policy: Mutex<super::node_status::Enforcement>,
    /// The agent's health as last published in the CiliumNode's `status.agent`.
    pub node_health: Mutex<Option<crate::state::cilium_node::AgentHealth>>,
    pub view: Arc<RwLock<ClusterView>>,
    pub metrics: AgentMetrics,
    pub registry: Arc<Registry>,
    pub ready: AtomicBool,
    pub synced: AtomicBool,
    pub runtime: tokio::runtime::Handle,
}

/// Lock a mutex, recovering the data if a panicking thread poisoned it: the
/// agent must keep its last good state rather than stop.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Datapath events that may wait for the slowest plugin before it starts losing
/// them (it is told how many it lost).
pub const EVENT_CHANNEL_CAPACITY: usize = 8192;

/// Run the agent until SIGINT or SIGTERM.
pub async fn run(config_path: &Path, plugins: Vec<Box<dyn Plugin>>) -> Result<(), AgentError> {
    let started = Instant::now();
    let config = Config::from_file(config_path)?;
    let mut manager = PluginManager::new(plugins);
    if let Err(errors) = manager.configure(&config.plugins) {
        return Err(AgentError::Configs(
            errors.iter().map(|e| config.plugin_error(e)).collect(),
        ));
    }
    for entry in config.native.iter().filter(|n| n.enabled) {
        manager.add_native(entry);
    }
    let agent_config = config.agent.clone();
    info!(node = %agent_config.node_name, config = %config_path.display(), "starting agent");
    for (what, dir) in [
        ("state directory", &agent_config.state_dir),
        ("run directory", &agent_config.run_dir),
    ] {
        std::fs::create_dir_all(dir).map_err(|source| AgentError::Io {
            what,
            path: dir.clone(),
            source,
        })?;
    }

    // 1. The datapath, reusing pinned maps, with the switches of the enabled plugins.
    let shape = super::toggle::DatapathShape::of(&manager, &agent_config);
    // Maps whose configured size changed are recreated (and reprogrammed by their plugin).
    crate::datapath::resize_pinned_maps(
        &crate::datapath::node_pin_dir(&agent_config.pin_root, &agent_config.node_name)
            .join("maps"),
        &shape.switches,
    )?;
    let datapath = Datapath::load(&DatapathConfig {
        node_name: agent_config.node_name.clone(),
        pin_root: agent_config.pin_root.clone(),
        switches: shape.switches.clone(),
    })?;
    let map_dir = datapath.node_pin_dir().join("maps");
    // Held until the agent stops (or a toggle replaces them); the links stay pinned after.
    let socket_lb = socket_lb(
        &agent_config,
        datapath.node_pin_dir(),
        shape.socket_lb,
        &shape.switches,
    )?;
    let host = super::devices::attach_host_devices(
        datapath.node_pin_dir(),
        &shape.switches,
        &shape.devices,
        agent_config.node_ip,
    )?;
    let events_reader = datapath.event_reader()?;

    // 2. Endpoints of the previous run.
    let pod_cidr = agent_config.pod_cidr.ok_or(AgentError::NoPodCidr)?;
    let endpoints = EndpointManager::new(&agent_config.state_dir, pod_cidr)?.with_ipv6(
        agent_config
            .enable_ipv6
            .then_some(agent_config.pod_cidr_v6)
            .flatten(),
    );

    // 3. State.
    let store = StateStore::new();
    let (datastore, datastore_kind) = make_datastore(&agent_config).await?;
    let mut registry = Registry::default();
    let metrics = AgentMetrics::register(&mut registry, env!("CARGO_PKG_VERSION"));
    manager.register_metrics(&mut registry);
    let registry = Arc::new(registry);
    let (events_tx, _) = broadcast::channel::<Arc<DatapathEvent>>(EVENT_CHANNEL_CAPACITY);
    let agent = Arc::new(Agent {
        config: agent_config.clone(),
        started,
        store: store.clone(),
        datastore: datastore.clone(),
        datastore_kind,
        datapath: Mutex::new(datapath),
        endpoints: Mutex::new(endpoints),
        identities: Mutex::new(IdentityAllocator::new()),
        ipcache: Arc::new(Mutex::new(Ipcache::new())),
        plugins: Mutex::new(manager),
        config_path: config_path.to_path_buf(),
        plugin_sections: Mutex::new(config.plugins.clone()),
        plugin_ctx: std::sync::OnceLock::new(),
        datapath_extras: Mutex::new(super::toggle::DatapathExtras {
            shape,
            host,
            socket_lb,
            pod_cache: Vec::new(),
            host_cache: Vec::new(),
        }),
        routes: Mutex::new(Vec::new()),
        node_annotations: Mutex::new(std::collections::BTreeMap::new()),
        endpoint_policy: Mutex::new(super::node_status::Enforcement::new()),
        node_health: Mutex::new(None),
        view: Arc::new(RwLock::new(ClusterView::default())),
        metrics,
        registry,
        ready: AtomicBool::new(false),
        synced: AtomicBool::new(false),
        runtime: tokio::runtime::Handle::current(),
    });
    agent.restore_endpoints();

    let shutdown = CancellationToken::new();
    let mut changes = store.subscribe();
    // Taken before the datastore starts, so its first load is never missed.
    let first_load = store.watch_generation();
    tokio::spawn(datastore.clone().run(store.clone(), shutdown.clone()));

    // 4. APIs.
    let api_agent: Arc<dyn crate::api::AgentApi> = agent.clone();
    let api_socket = agent_config.api_socket.clone();
    tokio::spawn(async move {
        if let Err(e) = serve_api(&api_socket, api_agent).await {
            error!(error = %e, "agent API stopped");
        }
    });
    let registry = agent.registry.clone();
    let metrics_address = agent_config.metrics_address;
    // Native plugins' own registries are read through the ABI at every scrape.
    let weak = Arc::downgrade(&agent);
    let native_metrics: crate::metrics::ExtraMetrics = Arc::new(move || {
        weak.upgrade()
            .map(|agent| lock(&agent.plugins).extra_metrics_text())
            .unwrap_or_default()
    });
    tokio::spawn(async move {
        if let Err(e) =
            crate::metrics::serve_metrics_with(metrics_address, registry, Some(native_metrics))
                .await
        {
            error!(error = %e, address = %metrics_address, "metrics server stopped");
        }
    });

    // 5. Datapath events and counters.
    spawn_event_reader(events_reader, events_tx.clone());
    spawn_counter_poller(agent.clone(), shutdown.clone());
    super::map_pressure::spawn_map_pressure_sampler(agent.clone(), shutdown.clone());
    super::node_status::spawn_status_publisher(agent.clone(), shutdown.clone());

    // 6. Node object, first reconcile, plugins.
    agent.publish_node().await;
    agent.wait_for_first_sync(first_load).await;
    agent.reconcile(&StateChangeSummary::default());
    let ctx: Arc<dyn PluginContext> = Arc::new(CoreContext {
        node_name: agent_config.node_name.clone(),
        state_dir: agent_config.state_dir.clone(),
        run_dir: agent_config.run_dir.clone(),
        map_dir,
        events: events_tx,
        l7: broadcast::channel(L7_QUEUE).0,
        view: agent.view.clone(),
        store: agent.store.clone(),
        events_lost: agent.metrics.kernel_events_lost(),
        ipcache: agent.ipcache.clone(),
        metrics: agent.metrics.clone(),
        node_ip: agent_config.node_ip,
        policy_conditions: super::policy_status::PolicyConditions::new(agent.datastore.clone()),
        agent: Arc::downgrade(&agent),
        policies: std::sync::RwLock::default(),
    });
    lock(&agent.plugins).start_all(&ctx);
    let _ = agent.plugin_ctx.set(ctx);
    super::reload::spawn_reloader(agent.clone(), shutdown.clone());
    // Plugins that started may annotate the Node (e.g. the WireGuard public key).
    if agent.refresh_node_annotations() {
        agent.publish_node().await;
    }
    agent.ready.store(true, Ordering::SeqCst);
    info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "agent ready"
    );

    // 7. Reconcile on every change until asked to stop.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| AgentError::Io {
        what: "installing the SIGTERM handler",
        path: config_path.to_path_buf(),
        source,
    })?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            change = changes.recv() => {
                let mut kinds = BTreeSet::new();
                // The changed objects, unless the feed lagged (then plugins resync in full).
                let mut objects = Some(BTreeSet::new());
                match change {
                    Ok(c) => note_change(&c.key, &mut kinds, &mut objects),
                    Err(broadcast::error::RecvError::Lagged(_)) => objects = None,
                    Err(broadcast::error::RecvError::Closed) => break,
                }
                // Coalesce a burst of changes into one reconcile.
                tokio::time::sleep(Duration::from_millis(20)).await;
                loop {
                    match changes.try_recv() {
                        Ok(c) => note_change(&c.key, &mut kinds, &mut objects),
                        Err(broadcast::error::TryRecvError::Lagged(_)) => objects = None,
                        Err(_) => break,
                    }
                }
                let agent = agent.clone();
                let summary = StateChangeSummary {
                    kinds: kinds.into_iter().collect(),
                    objects: objects.unwrap_or_default().into_iter().collect(),
                };
                let _ = tokio::task::spawn_blocking(move || agent.reconcile(&summary)).await;
            }
        }
    }
    info!("agent stopping; programs and maps stay pinned so traffic keeps flowing");
    shutdown.cancel();
    lock(&agent.plugins).stop_all();
    Ok(())
}

/// Adds one change to the summary being coalesced.
fn note_change(
    key: &crate::state::ObjectKey,
    kinds: &mut BTreeSet<String>,
    objects: &mut Option<BTreeSet<porin_plugin_sdk::ChangedObject>>,
) {
    kinds.insert(key.kind.as_str().to_string());
    if let Some(objects) = objects {
        objects.insert(porin_plugin_sdk::ChangedObject {
            kind: key.kind.as_str().to_string(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        });
    }
}

/// Socket-level load balancing on the node's cgroup when the lb plugin asks for it
/// (`kube_proxy_replacement` and `socket_lb`); otherwise the links a previous agent pinned
/// are removed, so every service packet goes through the per-packet DNAT.
pub(crate) fn socket_lb(
    config: &AgentConfig,
    node_dir: &Path,
    on: bool,
    switches: &[(String, u32)],
) -> Result<Option<SocketLb>, AgentError> {
    if !on {
        SocketLb::remove_pins(node_dir)?;
        return Ok(None);
    }
    let cgroup = match &config.cgroup_path {
        Some(path) => path.clone(),
        None => cgroup2_root()?,
    };
    let (socket_lb, _) = SocketLb::attach(node_dir, &cgroup, switches)?;
    Ok(Some(socket_lb))
}

async fn make_datastore(
    config: &AgentConfig,
) -> Result<(Arc<dyn Datastore>, &'static str), AgentError> {
    match config.datastore {
        DatastoreKind::Local => {
            let local = crate::state::LocalDatastore::new(
                crate::state::LocalConfig::new(config.node_name.clone(), config.manifests.clone())
                    .with_runtime_dir(config.runtime_dir.clone()),
            );
            Ok((Arc::new(local), "local"))
        }
        DatastoreKind::Kubernetes => {
            let kube =
                crate::state::KubernetesDatastore::try_default(config.node_name.clone()).await?;
            Ok((Arc::new(kube), "kubernetes"))
        }
    }
}

fn spawn_event_reader(
    mut reader: crate::datapath::EventReader,
    events: broadcast::Sender<Arc<DatapathEvent>>,
) {
    tokio::spawn(async move {
        loop {
            match reader.next().await {
                Ok(event) => {
                    // No subscriber (observe disabled) is fine.
                    let _ = events.send(Arc::new(super::api_impl::to_sdk_event(&event)));
                }
                Err(e) => {
                    warn!(error = %e, "reading datapath events");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
}

fn spawn_counter_poller(agent: Arc<Agent>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let samples = lock(&agent.datapath).counters();
            match samples {
                Ok(samples) => agent.metrics.update_datapath_counters(
                    &samples
                        .iter()
                        .map(super::api_impl::to_metrics_sample)
                        .collect::<Vec<_>>(),
                ),
                Err(e) => warn!(error = %e, "reading datapath counters"),
            }
            let failing = lock(&agent.plugins)
                .statuses()
                .iter()
                .filter(|p| p.enabled && !p.health.is_ok())
                .count();
            agent.metrics.set_controllers_failing(failing as i64);
        }
    });
}

impl Agent {
    /// Re-attach the previous run's endpoints: their interfaces still exist and
    /// their pinned links get the freshly loaded programs atomically.
    fn restore_endpoints(&self) {
        let mut endpoints = lock(&self.endpoints);
        let (kept, stale) = endpoints.load();
        let mut datapath = lock(&self.datapath);
        for record in stale {
            let _ = datapath.detach_endpoint(&record.host_ifname);
            let _ = crate::endpoint::links::delete_pod_link(&record.host_ifname);
        }
        for record in kept {
            let key = format!("{}/{}", record.namespace, record.pod);
            if !crate::endpoint::links::link_exists(&record.host_ifname) {
                warn!(endpoint = %key, "interface of a recorded endpoint is gone; forgetting it");
                let _ = datapath.detach_endpoint(&record.host_ifname);
                endpoints.remove(&record.namespace, &record.pod);
                continue;
            }
            match datapath.attach_endpoint(&record.host_ifname) {
                Ok(report) => info!(endpoint = %key, ?report, "endpoint restored"),
                Err(e) => {
                    error!(endpoint = %key, error = %e, "cannot re-attach programs to a restored endpoint")
                }
            }
            if record.ipv6 != endpoints.ipv6_of(record.ipv4) {
                // enable_ipv6 changed since the pod was made: its interface keeps what it
                // had until the pod is recreated.
                warn!(endpoint = %key, ipv6 = ?record.ipv6, "the pod's IPv6 address does not follow enable_ipv6 until it is recreated");
            }
            for addr in record.addresses() {
                lock(&self.ipcache).upsert(
                    IpNet::from(addr),
                    record.identity,
                    Source::LocalEndpoint,
                );
                if let Ok(mut map) = datapath.endpoints() {
                    let _ = map.upsert(
                        addr,
                        crate::datapath::EndpointInfo {
                            endpoint_id: record.id,
                            ifindex: record.ifindex,
                            identity: record.identity,
                        },
                    );
                }
            }
        }
        if let Err(e) = endpoints.persist() {
            warn!(error = %e, "writing the endpoint record");
        }
    }

    /// The first load of the datastore, bounded so an empty or unreachable source
    /// does not hold readiness forever.
    async fn wait_for_first_sync(&self, mut generation: tokio::sync::watch::Receiver<u64>) {
        let _ = tokio::time::timeout(Duration::from_millis(500), generation.changed()).await;
        self.synced.store(true, Ordering::SeqCst);
    }

    /// Publish this node's Node object: its pod CIDR and address, so other agents
    /// route to our pods.
    async fn publish_node(&self) {
        let Some(node_ip) = self.config.node_ip else {
            warn!("no node_ip in the configuration: other nodes cannot route to this node's pods");
            return;
        };
        let Some(pod_cidr) = self.config.pod_cidr else {
            return;
        };
        let node = self.node_object(pod_cidr, node_ip);
        if let Err(e) = self.datastore.publish(node).await {
            warn!(error = %e, "publishing this node");
        }
        if let Some(cilium_node) = self.cilium_node()
            && let Err(e) = self.datastore.publish(cilium_node.into()).await
        {
            warn!(error = %e, "publishing this node's CiliumNode");
        }
    }

    /// The Node object this node publishes, with the plugins' current annotations.
    fn node_object(&self, pod_cidr: ipnet::Ipv4Net, node_ip: IpAddr) -> crate::state::Object {
        super::api_impl::node_object(
            &self.config.node_name,
            pod_cidr,
            node_ip,
            super::api_impl::NodeV6::of(&self.config),
            lock(&self.node_annotations).clone(),
        )
    }

    /// The CiliumNode this node publishes: underlay address, pod CIDR, the plugins'
    /// annotations and the agent's health as last seen; `None` without node_ip or pod CIDR.
    pub(crate) fn cilium_node(&self) -> Option<crate::state::CiliumNode> {
        let (node_ip, pod_cidr) = (self.config.node_ip?, self.config.pod_cidr?);
        let annotations = lock(&self.node_annotations).clone();
        let mut node = crate::state::CiliumNode::for_agent(
            &self.config.node_name,
            pod_cidr,
            node_ip,
            annotations,
        );
        if let (Some(v6), Some(spec)) = (super::api_impl::NodeV6::of(&self.config), &mut node.spec)
        {
            if let Some(ipam) = &mut spec.ipam {
                ipam.pod_cidrs.push(v6.pod_cidr.to_string());
            }
            if let Some(ip) = v6.node_ip {
                spec.addresses.push(crate::state::cilium_node::NodeAddress {
                    kind: "InternalIP".to_owned(),
                    ip: ip.to_string(),
                });
            }
        }
        node.status = lock(&self.node_health)
            .clone()
            .map(|agent| crate::state::cilium_node::CiliumNodeStatus { agent: Some(agent) });
        Some(node)
    }

    /// Take the running plugins' Node annotations; true when they changed since the
    /// last call (the Node must be republished).
    fn refresh_node_annotations(&self) -> bool {
        let wanted = lock(&self.plugins).node_annotations();
        let mut current = lock(&self.node_annotations);
        if *current == wanted {
            return false;
        }
        *current = wanted;
        true
    }

    /// Bring everything derived from the cluster state up to date.
    pub(crate) fn reconcile(&self, summary: &StateChangeSummary) {
        let snapshot = self.store.snapshot();
        let mut republish = Vec::new();

        // Local endpoints: labels → identities.
        {
            let mut endpoints = lock(&self.endpoints);
            let mut identities = lock(&self.identities);
            let datapath = lock(&self.datapath);
            let mut ipcache = lock(&self.ipcache);
            for record in endpoints.iter_mut() {
                let labels =
                    cluster::pod_security_labels(&snapshot, &record.namespace, &record.pod);
                // Each Ready endpoint holds one reference on its identity.
                let current = labels.as_ref().and_then(|l| identities.identity_of(l));
                if record.state == EndpointState::Ready && current == Some(record.identity) {
                    continue;
                }
                let (identity, state, label_strings) = match labels {
                    Some(labels) => match identities.allocate(&labels) {
                        Ok(id) => (id, EndpointState::Ready, labels.to_strings()),
                        Err(e) => {
                            error!(pod = %record.pod, error = %e, "allocating an identity");
                            continue;
                        }
                    },
                    None => (
                        ReservedIdentity::Init.id(),
                        EndpointState::WaitingForIdentity,
                        Vec::new(),
                    ),
                };
                if identity == record.identity && state == record.state {
                    continue;
                }
                if record.state == EndpointState::Ready && record.identity >= 256 {
                    let _ = identities.release(record.identity);
                }
                record.identity = identity;
                record.state = state;
                record.labels = label_strings;
                for addr in record.addresses() {
                    ipcache.upsert(IpNet::from(addr), identity, Source::LocalEndpoint);
                    if let Ok(mut map) = datapath.endpoints()
                        && let Err(e) = map.upsert(
                            addr,
                            crate::datapath::EndpointInfo {
                                endpoint_id: record.id,
                                ifindex: record.ifindex,
                                identity,
                            },
                        )
                    {
                        error!(pod = %record.pod, %addr, error = %e, "updating the endpoints map");
                    }
                }
                republish.push(record.clone());
            }
            if !republish.is_empty()
                && let Err(e) = endpoints.persist()
            {
                warn!(error = %e, "writing the endpoint record");
            }
        }

        // Other nodes: their endpoints and routes to their pod CIDRs.
        let local_ips: BTreeSet<IpAddr> = lock(&self.endpoints)
            .iter()
            .flat_map(super::EndpointRecord::addresses)
            .collect();
        let remote = cluster::remote_endpoints(&snapshot, |ip| local_ips.contains(&ip));
        let routes =
            cluster::node_routes(&snapshot, &self.config.node_name, self.config.enable_ipv6);
        {
            // Same lock order as above (datapath before ipcache): reconciles run from the
            // API and from the datastore watch at once, and the reverse order deadlocks.
            let datapath = lock(&self.datapath);
            let mut ipcache = lock(&self.ipcache);
            let wanted: BTreeSet<IpNet> = remote.iter().map(|r| IpNet::from(r.ip)).collect();
            let stale: Vec<IpNet> = ipcache
                .entries()
                .filter(|(p, e)| e.source == Source::RemoteEndpoint && !wanted.contains(p))
                .map(|(p, _)| p)
                .collect();
            for prefix in stale {
                ipcache.remove(prefix, Source::RemoteEndpoint);
            }
            for r in &remote {
                ipcache.upsert(IpNet::from(r.ip), r.meta.identity, Source::RemoteEndpoint);
            }
            for route in &routes {
                if let Ok(ip) = IpNet::new(route.via, if route.via.is_ipv4() { 32 } else { 128 }) {
                    ipcache.upsert(ip, ReservedIdentity::RemoteNode.id(), Source::Node);
                }
            }
            if let Some(node_ip) = self.config.node_ip
                && let Ok(ip) = IpNet::new(node_ip, if node_ip.is_ipv4() { 32 } else { 128 })
            {
                ipcache.upsert(ip, ReservedIdentity::Host.id(), Source::Node);
            }
            if let Some(v6) = super::api_impl::NodeV6::of(&self.config)
                && let Some(node_ip) = v6.node_ip
            {
                let ip = IpNet::from(IpAddr::V6(node_ip));
                ipcache.upsert(ip, ReservedIdentity::Host.id(), Source::Node);
            }
            match datapath.ipcache() {
                Ok(mut sink) => {
                    if let Err(e) = ipcache.sync(&mut super::api_impl::IpcacheMap(&mut sink)) {
                        error!(error = %e, "writing the ipcache map; will retry on the next change");
                        ipcache.mark_unsynced();
                    }
                }
                Err(e) => error!(error = %e, "opening the ipcache map"),
            }
        }
        self.sync_routes(routes);

        // The view plugins read.
        self.rebuild_view(&remote);
        self.update_endpoint_gauges();

        for record in republish {
            let policy = lock(&self.endpoint_policy)
                .get(&record.id)
                .map(|&(ingress, egress)| super::node_status::endpoint_policy(ingress, egress));
            let cep = super::api_impl::cilium_endpoint(&self.config, &record, policy);
            let datastore = self.datastore.clone();
            self.runtime.spawn(async move {
                if let Err(e) = datastore.publish(cep).await {
                    warn!(error = %e, "publishing a CiliumEndpoint");
                }
            });
        }
        lock(&self.plugins).reconcile_all(summary);
        if self.refresh_node_annotations()
            && let (Some(node_ip), Some(pod_cidr)) = (self.config.node_ip, self.config.pod_cidr)
        {
            // The CiliumNode carries the same annotations (the WireGuard key).
            let cilium_node = self.cilium_node();
            let node = self.node_object(pod_cidr, node_ip);
            let datastore = self.datastore.clone();
            self.runtime.spawn(async move {
                if let Err(e) = datastore.publish(node).await {
                    warn!(error = %e, "republishing this node");
                }
                if let Some(cilium_node) = cilium_node
                    && let Err(e) = datastore.publish(cilium_node.into()).await
                {
                    warn!(error = %e, "republishing this node's CiliumNode");
                }
            });
        }
    }

    /// Plain underlay routes (`pod CIDR via node IP`) to every other node, except the
    /// nodes a plugin routes itself (the encryption plugin's tunnel): those are skipped,
    /// and a plain route installed before the claim is deleted by its gateway, so the
    /// plugin's device route for the same prefix is never touched.
    fn sync_routes(&self, wanted: Vec<NodeRoute>) {
        let claimed = lock(&self.plugins).claimed_node_routes();
        let wanted: Vec<NodeRoute> = wanted
            .into_iter()
            .filter(|r| !claimed.contains(&r.node))
            .collect();
        let mut installed = lock(&self.routes);
        if *installed == wanted {
            return;
        }
        for old in installed.iter().filter(|r| !wanted.contains(r)) {
            let _ = run_ip(&[
                "route",
                "del",
                &old.pod_cidr.to_string(),
                "via",
                &old.via.to_string(),
            ]);
        }
        for route in &wanted {
            if let Err(e) = run_ip(&[
                "route",
                "replace",
                &route.pod_cidr.to_string(),
                "via",
                &route.via.to_string(),
            ]) {
                error!(node = %route.node, error = %e, "installing the route to a node's pods");
            }
        }
        *installed = wanted;
    }

    fn rebuild_view(&self, remote: &[cluster::RemoteEndpoint]) {
        let mut view = ClusterView::default();
        let snapshot = self.store.snapshot();
        for r in remote {
            view.identity_labels
                .insert(r.meta.identity, r.meta.labels.clone());
            view.by_ip.insert(r.ip, r.meta.clone());
        }
        for record in lock(&self.endpoints).iter() {
            view.identity_labels
                .insert(record.identity, record.labels.clone());
            let meta = porin_plugin_sdk::EndpointMeta {
                id: record.id,
                namespace: record.namespace.clone(),
                pod_name: record.pod.clone(),
                identity: record.identity,
                labels: record.labels.clone(),
                node_name: self.config.node_name.clone(),
                workload: snapshot
                    .pod(&record.namespace, &record.pod)
                    .and_then(cluster::workload_of),
            };
            for addr in record.addresses() {
                view.by_ip.insert(addr, meta.clone());
            }
        }
        if let Ok(mut v) = self.view.write() {
            *v = view;
        }
    }

    pub(crate) fn update_endpoint_gauges(&self) {
        let endpoints = lock(&self.endpoints);
        for state in EndpointState::ALL {
            let n = endpoints.iter().filter(|r| r.state == state).count();
            self.metrics
                .set_endpoint_count(metrics_state(state), n as i64);
        }
    }
}

fn metrics_state(state: EndpointState) -> crate::metrics::EndpointState {
    use crate::metrics::EndpointState as M;
    match state {
        EndpointState::WaitingForIdentity => M::WaitingForIdentity,
        EndpointState::Regenerating => M::Regenerating,
        EndpointState::Ready => M::Ready,
        EndpointState::Disconnecting => M::Disconnecting,
    }
}

/// Run `ip` in the agent's network namespace.
pub(crate) fn run_ip(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
