//! The network policy plugin's lifecycle: open the policy maps, and on start and on every
//! relevant state change compute this node's policy map contents and write the differences.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use porin_core::datapath::{MAP_POLICY, MAP_POLICY_EP, MAP_PROXY_REDIR, PolicyMaps};
use porin_plugin_sdk::{
    CidrIdentity, ClusterState, DatapathContribution, Health, Plugin, PluginContext, PluginError,
    StateChangeSummary, Switch,
};
use tracing::{debug, info, warn};

use crate::compute::{CidrIdentities, referenced_fqdns, referenced_prefixes};
use crate::dns::run::DnsProxy;
use crate::dns::{DnsPolicy, DnsView, NamePattern};
use crate::enforce::desired::{
    EndpointInput, IdentityInput, NamedPorts, ambiguous_egress_port_names,
};
use crate::enforce::incremental::{Incremental, Inputs};
use crate::enforce::loader::Loader;
use crate::enforce::names::policy_table;
use crate::enforce::programmer::Programmer;
use crate::l7::{
    ContextPeers, L7Proxy, NamedPortView, OriginalDestination, PodDestination, PolicySet,
    RunningProxy, SharedPolicies, container_ports,
};
use crate::model::Labels;
use crate::proxy::OriginalDestinations;
use crate::status::PolicyStatus;
use crate::{L7ProxyConfig, PolicyConfig};

/// The section name in `porin.toml`.
pub const NAME: &str = "policy";

/// Kinds whose changes can change the policy maps.
const WATCHED_KINDS: [&str; 6] = [
    "NetworkPolicy",
    "CiliumNetworkPolicy",
    "CiliumClusterwideNetworkPolicy",
    "Pod",
    "Namespace",
    "CiliumEndpoint",
];

/// The policy plugin.
#[derive(Default)]
pub struct PolicyPlugin {
    config: PolicyConfig,
    health: Option<Health>,
    running: Option<Running>,
    status: PolicyStatus,
}

struct Running {
    ctx: Arc<dyn PluginContext>,
    maps: PolicyMaps,
    loader: Loader,
    programmer: Programmer,
    /// Local identities of the prefixes the policies reference, kept stable across changes.
    cidrs: CidrIdentities,
    /// The computation, applied incrementally when only identities or policies were added.
    engine: Incremental,
    /// Problems reported last time, so each is logged once.
    problems: Vec<String>,
    /// The node's DNS proxy, or why it is not running.
    dns: Result<DnsProxy, String>,
    /// The policies the L7 proxy judges by, and the proxy (when configured).
    l7_policies: Arc<SharedPolicies>,
    l7_proxy: Option<RunningProxy>,
    /// The revision whose policy table was published last (0: none yet).
    published_revision: u64,
}

fn labels_of(labels: &[String]) -> Labels {
    // Invalid labels cannot come from core; an endpoint without labels selects nothing.
    Labels::parse_list(&labels.join(",")).unwrap_or_default()
}

fn named_ports(pods: &[Pod], namespace: &str, name: &str) -> BTreeMap<String, u16> {
    pods.iter()
        .filter(|p| {
            p.metadata.namespace.as_deref() == Some(namespace)
                && p.metadata.name.as_deref() == Some(name)
        })
        .flat_map(container_ports)
        .collect()
}

/// The named container ports of every pod with an address, by the pod's identity (the
/// ports egress rules name resolve against the peer).
fn identity_named_ports(
    ctx: &dyn PluginContext,
    state: &dyn ClusterState,
    pods: &[Pod],
) -> HashMap<u32, NamedPorts> {
    let mut named: HashMap<(&str, &str), BTreeMap<String, u16>> = HashMap::new();
    for pod in pods {
        let (Some(namespace), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
            continue;
        };
        let ports = named_ports(std::slice::from_ref(pod), namespace, name);
        if !ports.is_empty() {
            named.insert((namespace.as_str(), name.as_str()), ports);
        }
    }
    let mut out: HashMap<u32, NamedPorts> = HashMap::new();
    if named.is_empty() {
        return out;
    }
    for address in state.pod_addresses() {
        let key = (address.namespace.as_str(), address.pod_name.as_str());
        let (Some(ports), Some(meta)) = (named.get(&key), ctx.resolve_endpoint(address.ip)) else {
            continue;
        };
        let merged = out.entry(meta.identity).or_default();
        for (name, port) in ports {
            merged.entry(name.clone()).or_default().insert(*port);
        }
    }
    out
}

/// Start the node's L7 proxy: peers resolved through the agent, records to the
/// flow pipeline.
fn startl7_proxy(
    config: &L7ProxyConfig,
    http_proxy_port: u16,
    ctx: &Arc<dyn PluginContext>,
    policies: Arc<SharedPolicies>,
) -> Result<RunningProxy, PluginError> {
    let start_error = |message: String| PluginError::Start {
        plugin: NAME.to_string(),
        message,
    };
    let original: Arc<dyn OriginalDestination> = match &config.static_destination {
        Some(text) => Arc::new(PodDestination::parse(ctx.clone(), text).ok_or_else(|| {
            start_error(format!(
                "l7_proxy.static_destination {text:?}: expected NAMESPACE/POD:PORT"
            ))
        })?),
        None => Arc::new(
            OriginalDestinations::open(&ctx.map_pin_path(MAP_PROXY_REDIR)).map_err(|e| {
                start_error(format!("L7 proxy: the datapath's redirect records: {e}"))
            })?,
        ),
    };
    // Where the datapath redirects `rules.http` ports: the node's IP on the HTTP proxy port.
    let listen = config.listen.unwrap_or_else(|| {
        std::net::SocketAddr::new(
            ctx.node_ip()
                .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
            http_proxy_port,
        )
    });
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| start_error(format!("no async runtime for the L7 proxy: {e}")))?;
    let _guard = runtime.enter();
    let proxy = L7Proxy {
        policies,
        peers: Arc::new(ContextPeers(ctx.clone())),
        original,
        sink: Arc::new(ctx.clone()),
    };
    // Steered by the datapath (no static destination): egress by DNAT, ingress by
    // handing packets to the transparent listener, delivered by the fwmark rule.
    let proxy = if config.static_destination.is_none() {
        crate::l7::install_local_delivery().map_err(|e| start_error(e.to_string()))?;
        proxy.start_transparent(listen)
    } else {
        proxy.start(listen)
    }
    .map_err(|e| start_error(e.to_string()))?;
    info!(plugin = NAME, address = %proxy.addr, "L7 proxy listening");
    Ok(proxy)
}

impl PolicyPlugin {
    pub fn new() -> Self {
        Self::default()
    }

    /// The validated configuration.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// Computes and programs the maps. Broken policies keep their last good version;
    /// failures degrade health and are retried on the next change.
    fn program(&mut self) {
        let enforcement = self.config.enforcement;
        let Some(run) = self.running.as_mut() else {
            return;
        };
        let state = run.ctx.state();
        let loaded = run.loader.load(&state.policy_documents());
        run.ctx.report_policy_validity(&loaded.validity);
        let pods = state.pods();
        let endpoints: Vec<EndpointInput> = state
            .local_endpoints()
            .into_iter()
            .map(|e| EndpointInput {
                id: e.id,
                labels: labels_of(&e.labels),
                named_ports: named_ports(&pods, &e.namespace, &e.pod_name),
            })
            .collect();
        let mut identity_ports = identity_named_ports(run.ctx.as_ref(), state.as_ref(), &pods);
        let identities: Vec<IdentityInput> = state
            .identities()
            .into_iter()
            .map(|i| IdentityInput {
                id: i.id,
                labels: labels_of(&i.labels),
                named_ports: identity_ports.remove(&i.id).unwrap_or_default(),
            })
            .collect();
        let ambiguous_names = ambiguous_egress_port_names(&loaded.policies, &identities);
        // CIDR identities go into the ipcache before the policy entries that name them.
        run.cidrs.update(&referenced_prefixes(&loaded.policies));
        run.cidrs.update_fqdns(&referenced_fqdns(&loaded.policies));
        let dns_policy = DnsPolicy::compute(&loaded.policies, &endpoints);
        let dns_problems: Vec<String> = dns_policy.errors.iter().map(ToString::to_string).collect();
        if let Ok(dns) = &run.dns {
            dns.set_view(DnsView {
                selectors: run
                    .cidrs
                    .fqdns()
                    .map(|(s, id)| (NamePattern::from_selector(s), id))
                    .collect(),
                policy: dns_policy,
            });
        }
        let prefixes: Vec<CidrIdentity> = run
            .cidrs
            .iter()
            .map(|(p, identity)| CidrIdentity {
                addr: p.addr(),
                prefix_len: p.prefix_len(),
                identity,
            })
            .collect();
        let ipcache_error = run
            .ctx
            .set_cidr_identities(&prefixes)
            .err()
            .map(|e| format!("writing {} CIDR identities: {e}", prefixes.len()));
        let endpoint_count = endpoints.len();
        let policy_count = loaded.policies.len();
        let in_force = PolicyStatus::in_force(&loaded.policies);
        if run.l7_proxy.is_some() {
            run.l7_policies.replace(PolicySet {
                policies: loaded.policies.clone(),
                enforcement,
                named_ports: NamedPortView::of_cluster(state.as_ref(), &pods, &identities),
            });
        }
        let (step, wanted) = run.engine.update(Inputs {
            policies: loaded.policies,
            enforcement,
            endpoints,
            identities,
            cidrs: run.cidrs.clone(),
            proxies: self.config.proxy_ports(),
        });
        let mut report = run.programmer.sync(wanted, &mut run.maps);
        report.errors.extend(ipcache_error);
        debug!(
            plugin = NAME,
            generation = state.generation(),
            policies = policy_count,
            endpoints = endpoint_count,
            step = ?step,
            entries = run.programmer.entry_count(),
            writes = report.writes,
            "policy maps programmed"
        );
        if loaded.problems != run.problems {
            for p in &loaded.problems {
                warn!(plugin = NAME, problem = %p, "invalid policy");
            }
            run.problems = loaded.problems.clone();
        }
        for e in &report.errors {
            warn!(plugin = NAME, error = %e, "programming the policy maps; retrying on the next change");
        }
        let mut problems = loaded.problems;
        problems.extend(dns_problems);
        problems.extend(ambiguous_names.into_iter().map(|(name, ports)| {
            format!(
                "named port {name:?} is {ports:?} on different pods: egress rules naming it allow nothing (as in Cilium); give the name one number or name the port number"
            )
        }));
        problems.extend(report.errors);
        if let Err(e) = &run.dns {
            problems.push(format!("DNS proxy: {e}"));
        }
        self.status.record(
            in_force,
            problems.clone(),
            endpoint_count,
            run.programmer.entry_count(),
        );
        if self.status.revision != run.published_revision {
            let (table, collisions) = policy_table(
                self.status.policies.iter().map(|p| &p.source),
                self.status.revision,
            );
            for c in &collisions {
                warn!(plugin = NAME, problem = %c, "policy id collision");
            }
            run.ctx.publish_policies(Arc::new(table));
            run.published_revision = self.status.revision;
        }
        self.health = Some(if problems.is_empty() {
            Health::Ok
        } else {
            Health::Degraded(problems.join("; "))
        });
    }

    /// Starts answering DNS queries (the first policy view is set); a failure is reported
    /// like a failure to bind.
    fn serve_dns(&mut self) {
        let Some(run) = self.running.as_mut() else {
            return;
        };
        let Ok(dns) = run.dns.as_mut() else {
            return;
        };
        if let Err(e) = dns.serve() {
            warn!(plugin = NAME, error = %e, "DNS proxy not started: DNS rules are not enforced on this node (redirected queries go to their server)");
            run.dns = Err(e.to_string());
            self.program();
        }
    }
}

impl Plugin for PolicyPlugin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn configure(&mut self, section: &toml::Table) -> Result<(), PluginError> {
        self.config = PolicyConfig::from_section(section)?;
        Ok(())
    }

    fn datapath(&self) -> DatapathContribution {
        DatapathContribution {
            switches: vec![
                Switch {
                    name: "CFG_ENABLE_POLICY",
                    value: 1,
                },
                Switch {
                    name: "CFG_POLICY_AUDIT",
                    value: u32::from(self.config.policy_audit_mode),
                },
            ],
            maps: vec![MAP_POLICY, MAP_POLICY_EP, MAP_PROXY_REDIR],
            devices: vec![],
        }
    }

    fn start(&mut self, ctx: Arc<dyn PluginContext>) -> Result<(), PluginError> {
        let maps =
            PolicyMaps::open(|name| ctx.map_pin_path(name)).map_err(|e| PluginError::Start {
                plugin: NAME.to_string(),
                message: format!("opening the policy maps: {e}"),
            })?;
        let programmer = match (maps.default_denies(), maps.entries()) {
            (Ok(denies), Ok(entries)) => Programmer::adopt(denies, entries),
            (Err(e), _) | (_, Err(e)) => {
                warn!(plugin = NAME, error = %e, "reading the policy maps; reprogramming from scratch");
                Programmer::default()
            }
        };
        // Bound now, served once the first policy view is in (below).
        let dns = DnsProxy::bind(
            ctx.clone(),
            self.config.dns_proxy_port,
            self.config.fqdn_limits(),
        )
        .map_err(|e| {
            warn!(plugin = NAME, error = %e, "DNS proxy not started: DNS rules are not enforced on this node (redirected queries go to their server)");
            e.to_string()
        });
        let l7_policies = Arc::new(SharedPolicies::default());
        let l7_proxy = match &self.config.l7_proxy {
            Some(config) => Some(startl7_proxy(
                config,
                self.config.http_proxy_port,
                &ctx,
                l7_policies.clone(),
            )?),
            None => None,
        };
        self.running = Some(Running {
            dns,
            l7_policies,
            l7_proxy,
            ctx,
            maps,
            loader: Loader::default(),
            programmer,
            cidrs: CidrIdentities::default(),
            engine: Incremental::default(),
            problems: Vec::new(),
            published_revision: 0,
        });
        self.program();
        self.serve_dns();
        info!(plugin = NAME, enforcement = ?self.config.enforcement, "started");
        Ok(())
    }

    fn reconcile(&mut self, change: &StateChangeSummary) -> Result<(), PluginError> {
        if change.kinds.is_empty() || WATCHED_KINDS.iter().any(|k| change.touches(k)) {
            self.program();
        }
        Ok(())
    }

    fn stop(&mut self) -> Result<(), PluginError> {
        // The maps stay pinned: policy stays enforced while no agent runs.
        self.running = None;
        info!(plugin = NAME, "stopped");
        self.health = Some(Health::Stopped);
        Ok(())
    }

    fn health(&self) -> Health {
        self.health.clone().unwrap_or(Health::Starting)
    }

    fn status_json(&self) -> Option<serde_json::Value> {
        let mut status = self.status.clone();
        status.enforcement = self.config.enforcement;
        status.policy_audit_mode = self.config.policy_audit_mode;
        let mut value = serde_json::to_value(status).ok()?;
        if let (Some(run), Some(obj)) = (self.running.as_ref(), value.as_object_mut()) {
            let dns = match &run.dns {
                Ok(dns) => serde_json::json!({
                    "address": dns.addr.to_string(),
                    "counters": dns.shared().counters.snapshot(),
                    "learned_addresses": dns.shared().cache.lock().map(|c| c.len()).unwrap_or(0),
                }),
                Err(e) => serde_json::json!({ "error": e }),
            };
            obj.insert("dns_proxy".into(), dns);
        }
        Some(value)
    }
}
