//! The load-balancing plugin's lifecycle: open the LB maps, and on start and on every
//! relevant state change program them from the cluster's Services and EndpointSlices.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use porin_core::datapath::{
    Lb6Frontend, Lb6Maps, LbFrontend, MAGLEV_TABLE_SIZE_SWITCH, MAP_LB_BACKENDS, MAP_LB_MAGLEV,
    MAP_LB_SERVICES, MAP_LB_SLOTS, MAP_LB6_BACKENDS, MAP_LB6_SERVICES, MAP_LB6_SLOTS,
};
use porin_plugin_sdk::{
    ChangedObject, ClusterState, DEFAULT_DEVICE, DatapathContribution, Health, Plugin,
    PluginContext, PluginError, PodAddress, StateChangeSummary, Switch,
};
use tracing::{debug, info, warn};

use crate::LbConfig;
use crate::cpu_time::thread_cpu_time;
use crate::datapath_maps::DatapathMaps;
use crate::desired::FrontendKind;
use crate::desired::{
    ClusterObjects, DesiredServices, NodeView, PodIps, SERVICE_NAME_LABEL, ServiceKey,
    desired_by_service, pod_ipv4s, service_frontends,
};
use crate::desired6::{DesiredServices6, desired_services6};
use crate::desired6_nodeport::external_services6;
use crate::desired6_semantics::apply_semantics6;
use crate::programmer::{Programmer, SyncReport};
use crate::programmer6::{Affinity6, Programmer6};

/// The section name in `porin.toml`.
pub const NAME: &str = "lb";

/// Kinds whose changes can change services or their backends.
const WATCHED_KINDS: [&str; 4] = ["Service", "EndpointSlice", "Pod", "CiliumEndpoint"];

/// A change touching more objects than this is programmed as a full pass: looking each
/// touched Service's slices up one by one costs more than one indexed pass over all.
const INCREMENTAL_MAX_OBJECTS: usize = 1000;

/// The lb plugin.
#[derive(Default)]
pub struct LbPlugin {
    config: LbConfig,
    health: Option<Health>,
    running: Option<Running>,
    /// What was last programmed, for `porin service list`.
    served: DesiredServices,
    /// Frontends the last sync could not program, with the reason.
    failed: BTreeMap<LbFrontend, String>,
    /// The IPv6 frontends (dual stack) last programmed, and those that failed.
    served6: DesiredServices6,
    /// Their session affinity (timeout in seconds).
    affinity6: Affinity6,
    failed6: BTreeMap<Lb6Frontend, String>,
    /// The kind of each IPv6 frontend that is not a ClusterIP (NodePort, ExternalIP,
    /// LoadBalancer).
    kinds6: BTreeMap<Lb6Frontend, FrontendKind>,
}

struct Running {
    ctx: Arc<dyn PluginContext>,
    maps: DatapathMaps,
    programmer: Programmer,
    /// The frontends of each Service as last computed: an update recomputes only the
    /// Services it touches.
    by_service: HashMap<ServiceKey, Vec<LbFrontend>>,
    /// The Service each EndpointSlice (namespace, name) belonged to when last seen, so
    /// a deleted slice still finds its Service.
    slice_owner: HashMap<ServiceKey, String>,
    /// The IPv6 maps (None when they cannot be opened: IPv6 services are not served).
    maps6: Option<Lb6Maps>,
    programmer6: Programmer6,
}

/// How long the parts of one programming pass took, in wall and thread CPU time.
struct Timings {
    started: Instant,
    computed: Instant,
    done: Instant,
    cpu: Duration,
}

/// Wall and CPU clocks at the start of a pass.
struct Clock {
    wall: Instant,
    cpu: Duration,
}

impl Clock {
    fn start() -> Self {
        Self {
            wall: Instant::now(),
            cpu: thread_cpu_time(),
        }
    }

    fn finish(self, computed: Instant) -> Timings {
        Timings {
            started: self.wall,
            computed,
            done: Instant::now(),
            cpu: thread_cpu_time().saturating_sub(self.cpu),
        }
    }
}

impl LbPlugin {
    pub fn new() -> Self {
        Self::default()
    }

    /// The validated configuration.
    pub fn config(&self) -> &LbConfig {
        &self.config
    }

    fn maglev_on(&self) -> bool {
        self.config.algorithm == crate::Algorithm::Maglev
    }

    fn nodeport_on(&self) -> bool {
        self.config.kube_proxy_replacement && self.config.nodeport
    }

    /// Programs the maps from the whole current state. Failures degrade health and are
    /// retried on the next change; they never stop the agent.
    fn program(&mut self) {
        let Some(run) = self.running.as_mut() else {
            return;
        };
        let clock = Clock::start();
        let state = run.ctx.state();
        let (services, slices, pods, addresses) = (
            state.services(),
            state.endpoint_slices(),
            state.pods(),
            state.pod_addresses(),
        );
        let by_service = desired_by_service(&ClusterObjects {
            services: &services,
            slices: &slices,
            pods: &pods,
            addresses: &addresses,
            node: NodeView {
                local_ips: &local_ips(state.as_ref(), &addresses),
                affinity_timeout: affinity_default(&self.config),
            },
        });
        run.slice_owner = slices
            .iter()
            .filter_map(|s| {
                let owner = s.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
                Some((slice_key(s)?, owner.clone()))
            })
            .collect();
        run.by_service = by_service
            .iter()
            .map(|(key, frontends)| (key.clone(), frontends.iter().map(|(fe, _)| *fe).collect()))
            .collect();
        let desired: DesiredServices = by_service.into_values().flatten().collect();
        let computed = Instant::now();
        let report = run.programmer.sync(&desired, &mut run.maps);
        self.served = desired;
        let timings = clock.finish(computed);
        self.finish(&report, &timings, state.generation(), None);
        self.program_v6();
    }

    /// Programs the IPv6 frontends (dual stack) from the whole current state: they are
    /// few, so every pass recomputes them all and writes only differences.
    fn program_v6(&mut self) {
        let Some(run) = self.running.as_mut() else {
            return;
        };
        let Some(maps6) = run.maps6.as_mut() else {
            return;
        };
        let state = run.ctx.state();
        let (services, addresses) = (state.services(), state.pod_addresses());
        let mut desired = desired_services6(
            &services,
            &state.endpoint_slices(),
            &state.pods(),
            &addresses,
        );
        // NodePort, ExternalIP and LoadBalancer frontends, from the ClusterIP ones.
        let local6 = local_addresses(state.as_ref(), &addresses)
            .filter_map(|ip| match ip {
                IpAddr::V6(ip) => Some(ip),
                IpAddr::V4(_) => None,
            })
            .collect();
        let external = external_services6(&services, &desired, &local6);
        self.kinds6 = external
            .iter()
            .map(|(fe, (kind, _, _))| (*fe, *kind))
            .collect();
        let derived: Vec<(Lb6Frontend, Lb6Frontend)> = external
            .iter()
            .map(|(fe, (_, _, cluster))| (*fe, *cluster))
            .collect();
        desired.extend(
            external
                .into_iter()
                .map(|(fe, (_, backends, _))| (fe, backends)),
        );
        // internalTrafficPolicy and affinity of the ClusterIP frontends (by their VIP);
        // the NodePort, external and LoadBalancer frontends share their ClusterIP's affinity.
        let mut affinity = apply_semantics6(
            &mut desired,
            &services,
            &local6,
            affinity_default(&self.config),
        );
        for (fe, cluster) in derived {
            if let Some(timeout) = affinity.get(&cluster).copied() {
                affinity.insert(fe, timeout);
            }
        }
        let tables = Some(&mut run.maps.maglev);
        let failed = run
            .programmer6
            .sync_semantics(&desired, &affinity, maps6, tables);
        for (fe, reason) in &failed {
            warn!(plugin = NAME, frontend = %fe.addr, error = %reason, "programming an IPv6 frontend");
        }
        report_pressure6(run);
        self.failed6 = failed.into_iter().collect();
        self.served6 = desired;
        self.affinity6 = affinity;
    }

    /// Programs only the Services the changed objects belong to.
    fn program_changed(&mut self, objects: &[ChangedObject]) {
        let Some(run) = self.running.as_mut() else {
            return;
        };
        let clock = Clock::start();
        let state = run.ctx.state();
        let mut touched: BTreeSet<ServiceKey> = BTreeSet::new();
        for o in objects {
            let key = (
                o.namespace.clone().unwrap_or_else(|| "default".to_owned()),
                o.name.clone(),
            );
            match o.kind.as_str() {
                "Service" => {
                    touched.insert(key);
                }
                "EndpointSlice" => {
                    if let Some(owner) = run.slice_owner.remove(&key) {
                        touched.insert((key.0.clone(), owner));
                    }
                    let now = state.endpoint_slice(&key.0, &key.1);
                    if let Some(owner) = now
                        .as_ref()
                        .and_then(|s| s.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL).cloned())
                    {
                        touched.insert((key.0.clone(), owner.clone()));
                        run.slice_owner.insert(key, owner);
                    }
                }
                _ => {}
            }
        }
        let mut scope = BTreeSet::new();
        // Pods are only read for a Service without slices (the selector stand-in).
        let mut pods: Option<(Vec<Pod>, PodIps, BTreeSet<Ipv4Addr>)> = None;
        for key in touched {
            for fe in run.by_service.remove(&key).unwrap_or_default() {
                self.served.remove(&fe);
                scope.insert(fe);
            }
            let Some(svc) = state.service(&key.0, &key.1) else {
                continue;
            };
            let slices = state.endpoint_slices_of(&key.0, &key.1);
            let slice_refs: Vec<&EndpointSlice> = slices.iter().collect();
            let (pod_list, pod_ips, local) = pods.get_or_insert_with(|| {
                let list = state.pods();
                let addresses = state.pod_addresses();
                let ips = pod_ipv4s(&addresses, &list);
                let local = local_ips(state.as_ref(), &addresses);
                (list, ips, local)
            });
            let node = NodeView {
                local_ips: local,
                affinity_timeout: affinity_default(&self.config),
            };
            let frontends = service_frontends(&svc, &slice_refs, pod_list, pod_ips, node);
            let mut fes = Vec::with_capacity(frontends.len());
            for (fe, backends) in frontends {
                scope.insert(fe);
                fes.push(fe);
                self.served.insert(fe, backends);
            }
            run.by_service.insert(key, fes);
        }
        let computed = Instant::now();
        let report = run
            .programmer
            .sync_scope(&self.served, &scope, &mut run.maps);
        let timings = clock.finish(computed);
        self.finish(&report, &timings, state.generation(), Some(&scope));
        self.program_v6();
    }

    /// Health, failed frontends, map pressure and the log line of a programming pass.
    /// `scope`: the frontends this pass looked at (None: all of them).
    fn finish(
        &mut self,
        report: &SyncReport,
        t: &Timings,
        generation: u64,
        scope: Option<&BTreeSet<LbFrontend>>,
    ) {
        let Some(run) = self.running.as_ref() else {
            return;
        };
        match scope {
            None => self.failed.clear(),
            Some(scope) => self.failed.retain(|fe, _| !scope.contains(fe)),
        }
        self.failed.extend(report.failed.clone());
        report_pressure(run);
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        let (desired_ms, write_ms, total_ms, cpu_ms) = (
            ms(t.computed - t.started),
            ms(t.done - t.computed),
            ms(t.done - t.started),
            ms(t.cpu),
        );
        if report.writes > 0 || !report.errors.is_empty() {
            // What `scripts/bench lb` reads: how long programming took at this size.
            info!(
                plugin = NAME,
                generation,
                frontends = run.programmer.service_count(),
                writes = report.writes,
                desired_ms,
                write_ms,
                total_ms,
                cpu_ms,
                "services programmed"
            );
        } else {
            debug!(plugin = NAME, generation, total_ms, "services unchanged");
        }
        self.health = Some(if report.errors.is_empty() && self.failed.is_empty() {
            Health::Ok
        } else {
            for e in &report.errors {
                warn!(plugin = NAME, error = %e, "programming a service; retrying on the next change");
            }
            let mut problems = report.errors.clone();
            if problems.is_empty() {
                problems = self
                    .failed
                    .iter()
                    .map(|(fe, e)| format!("{}: {e}", fe.addr))
                    .collect();
            }
            Health::Degraded(problems.join("; "))
        });
    }
}

/// The IPv4 addresses of this node's endpoints: `Local` traffic policies keep these.
fn local_ips(state: &dyn ClusterState, addresses: &[PodAddress]) -> BTreeSet<Ipv4Addr> {
    local_addresses(state, addresses)
        .filter_map(|ip| match ip {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        })
        .collect()
}

/// The addresses (both families) of this node's endpoints.
fn local_addresses<'a>(
    state: &dyn ClusterState,
    addresses: &'a [PodAddress],
) -> impl Iterator<Item = IpAddr> + 'a {
    let local: BTreeSet<(String, String)> = state
        .local_endpoints()
        .into_iter()
        .map(|e| (e.namespace, e.pod_name))
        .collect();
    addresses
        .iter()
        .filter(move |a| local.contains(&(a.namespace.clone(), a.pod_name.clone())))
        .map(|a| a.ip)
}

/// `session_affinity_timeout` (validated: 1 to 86400) as the datapath stores it.
fn affinity_default(config: &LbConfig) -> u32 {
    u32::try_from(config.session_affinity_timeout).unwrap_or(86_400)
}

/// (namespace, name) of an EndpointSlice.
fn slice_key(slice: &EndpointSlice) -> Option<ServiceKey> {
    let name = slice.metadata.name.clone()?;
    let namespace = slice
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    Some((namespace, name))
}

/// `cilium_bpf_map_pressure` of the four maps the plugin writes, from its mirror (no
/// map walk: counting 100,000 entries through syscalls would cost more than the sync).
fn report_pressure(run: &Running) {
    let capacity = run.maps.lb.capacity();
    let (services, slots, backends) = run.programmer.entry_counts();
    for (map, used, max) in [
        (MAP_LB_SERVICES, services, capacity.services),
        (MAP_LB_SLOTS, slots, capacity.slots),
        (MAP_LB_BACKENDS, backends, capacity.backends),
        (
            MAP_LB_MAGLEV,
            run.programmer.table_count() + run.programmer6.table_count(),
            run.maps.maglev.capacity(),
        ),
    ] {
        run.ctx
            // The mirror also holds services waiting for room in a full map: at most 1.
            .set_map_pressure(map, (used as f64 / f64::from(max.max(1))).min(1.0));
    }
}

/// `cilium_bpf_map_pressure` of the IPv6 service, slot and backend maps, from the IPv6
/// programmer's mirror.
fn report_pressure6(run: &Running) {
    let Some(maps6) = run.maps6.as_ref() else {
        return;
    };
    let capacity = maps6.capacity();
    let (services, slots, backends) = run.programmer6.entry_counts();
    for (map, used, max) in [
        (MAP_LB6_SERVICES, services, capacity.services),
        (MAP_LB6_SLOTS, slots, capacity.slots),
        (MAP_LB6_BACKENDS, backends, capacity.backends),
    ] {
        run.ctx
            .set_map_pressure(map, (used as f64 / f64::from(max.max(1))).min(1.0));
    }
}

/// The programmed frontends with their backends, as `porin service list` shows them; a
/// frontend that could not be programmed carries the reason in `error`.
fn services_json(
    served: &DesiredServices,
    failed: &BTreeMap<LbFrontend, String>,
) -> Vec<serde_json::Value> {
    served
        .iter()
        .map(|(frontend, spec)| {
            frontend_json(
                frontend.addr.to_string(),
                frontend.proto,
                spec.kind.as_str(),
                spec.backends.iter().map(ToString::to_string).collect(),
                spec.affinity_timeout,
                failed.get(frontend),
            )
        })
        .collect()
}

/// The IPv6 frontends (dual stack) in the same shape, with their affinity; `kinds` holds
/// those that are not ClusterIPs.
fn services6_json(
    served: &DesiredServices6,
    kinds: &BTreeMap<Lb6Frontend, FrontendKind>,
    affinity: &Affinity6,
    failed: &BTreeMap<Lb6Frontend, String>,
) -> Vec<serde_json::Value> {
    served
        .iter()
        .map(|(frontend, backends)| {
            frontend_json(
                frontend.addr.to_string(),
                frontend.proto,
                kinds.get(frontend).copied().unwrap_or_default().as_str(),
                backends.iter().map(ToString::to_string).collect(),
                affinity.get(frontend).copied(),
                failed.get(frontend),
            )
        })
        .collect()
}

/// One row of `porin service list`.
fn frontend_json(
    frontend: String,
    proto: u8,
    kind: &str,
    backends: Vec<String>,
    affinity_timeout: Option<u32>,
    error: Option<&String>,
) -> serde_json::Value {
    let mut entry = serde_json::json!({
        "frontend": frontend,
        "protocol": match proto {
            6 => "TCP",
            17 => "UDP",
            _ => "other",
        },
        "type": kind,
        "backends": backends,
        "affinity": match affinity_timeout {
            Some(timeout) => serde_json::json!({ "type": "ClientIP", "timeout_seconds": timeout }),
            None => serde_json::json!({ "type": "None" }),
        },
    });
    if let Some(error) = error {
        entry["error"] = serde_json::Value::from(error.as_str());
    }
    entry
}

impl Plugin for LbPlugin {
    fn status_json(&self) -> Option<serde_json::Value> {
        let mut services = services_json(&self.served, &self.failed);
        services.extend(services6_json(
            &self.served6,
            &self.kinds6,
            &self.affinity6,
            &self.failed6,
        ));
        Some(serde_json::json!({ "services": services }))
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn configure(&mut self, section: &toml::Table) -> Result<(), PluginError> {
        self.config = LbConfig::from_section(section)?;
        Ok(())
    }

    fn datapath(&self) -> DatapathContribution {
        let sizes = self
            .config
            .map_sizes()
            .into_iter()
            .flat_map(|(_, value, switches)| {
                switches.iter().map(move |name| Switch { name, value })
            });
        DatapathContribution {
            switches: [
                Switch {
                    name: "CFG_ENABLE_LB",
                    value: u32::from(self.config.kube_proxy_replacement),
                },
                Switch {
                    name: "CFG_ENABLE_SOCKET_LB",
                    value: u32::from(self.config.socket_lb),
                },
                Switch {
                    name: "CFG_LB_MAGLEV",
                    value: u32::from(self.maglev_on()),
                },
                Switch {
                    name: MAGLEV_TABLE_SIZE_SWITCH,
                    value: self.config.maglev_table_size,
                },
                Switch {
                    name: "CFG_ENABLE_NODEPORT",
                    value: u32::from(self.nodeport_on()),
                },
            ]
            .into_iter()
            .chain(sizes)
            .collect(),
            maps: vec![],
            devices: if !self.nodeport_on() {
                vec![]
            } else if self.config.devices.is_empty() {
                vec![DEFAULT_DEVICE.to_string()]
            } else {
                self.config.devices.clone()
            },
        }
    }

    fn start(&mut self, ctx: Arc<dyn PluginContext>) -> Result<(), PluginError> {
        if !self.config.kube_proxy_replacement {
            info!(
                plugin = NAME,
                "kube_proxy_replacement = false: services are not served"
            );
            self.health = Some(Health::Ok);
            return Ok(());
        }
        let maps = DatapathMaps::open(|name| ctx.map_pin_path(name), self.config.maglev_table_size)
            .map_err(|e| PluginError::Start {
                plugin: NAME.to_string(),
                message: format!("opening the LB maps: {e}"),
            })?;
        // Adopt what a previous agent programmed, so ids stay stable across restarts.
        let programmer = maps.adopt().unwrap_or_else(|e| {
            warn!(plugin = NAME, error = %e, "reading the LB maps; reprogramming from scratch");
            Programmer::default()
        });
        let programmer =
            programmer.with_maglev(self.maglev_on().then_some(self.config.maglev_table_size));
        let mut maps6 = Lb6Maps::open(|name| ctx.map_pin_path(name))
            .inspect_err(|e| {
                warn!(plugin = NAME, error = %e, "opening the IPv6 LB maps: IPv6 services are not served");
            })
            .ok();
        let mut programmer6 = maps6
            .as_mut()
            .map(Programmer6::adopt)
            .unwrap_or_default()
            .with_maglev(self.maglev_on().then_some(self.config.maglev_table_size));
        if let Ok(ids) = maps.maglev.service_ids() {
            programmer6.adopt_tables(&ids.into_iter().collect());
        }
        self.running = Some(Running {
            ctx,
            maps,
            programmer,
            by_service: HashMap::new(),
            slice_owner: HashMap::new(),
            // Adopt a previous agent's IPv6 frontends too: ids stay, nothing is rewritten.
            programmer6,
            maps6,
        });
        self.program();
        info!(plugin = NAME, "started");
        Ok(())
    }

    fn reconcile(&mut self, change: &StateChangeSummary) -> Result<(), PluginError> {
        if !change.kinds.is_empty() && !WATCHED_KINDS.iter().any(|k| change.touches(k)) {
            return Ok(());
        }
        // Services and slices that changed are known: only they are recomputed. Pods and
        // CiliumEndpoints (the selector stand-in, pod addresses) or an unknown change
        // (the feed lagged) recompute everything.
        let incremental = !change.objects.is_empty()
            && change.objects.len() <= INCREMENTAL_MAX_OBJECTS
            && change.objects.iter().all(|o| {
                matches!(o.kind.as_str(), "Service" | "EndpointSlice")
                    || !WATCHED_KINDS.contains(&o.kind.as_str())
            });
        if incremental {
            self.program_changed(&change.objects);
        } else {
            self.program();
        }
        Ok(())
    }

    fn stop(&mut self) -> Result<(), PluginError> {
        // The maps stay pinned and programmed: services keep working while no agent runs.
        self.running = None;
        info!(plugin = NAME, "stopped");
        self.health = Some(Health::Stopped);
        Ok(())
    }

    fn health(&self) -> Health {
        self.health.clone().unwrap_or(Health::Starting)
    }
}
