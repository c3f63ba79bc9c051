//! Core's implementation of the plugins' context.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use std::collections::BTreeMap;
use std::sync::Mutex;

use ipnet::IpNet;
use porin_plugin_sdk::{
    CidrIdentity, ClusterState, DatapathEvent, EndpointMeta, IpcacheWriteError, L7Record,
    PluginContext, PolicyInfo, PolicyTable,
};
use tokio::sync::broadcast;

use super::api_impl::IpcacheMap;
use super::cluster::ClusterView;
use super::policy_status::PolicyConditions;
use super::run::lock;
use super::state_view::SnapshotState;
use crate::datapath::{IpCache, MAP_IPCACHE};
use crate::identity::ReservedIdentity;
use crate::ipcache::{Ipcache, Source};
use crate::metrics::AgentMetrics;
use crate::state::StateStore;

/// L7 records the pipeline may fall behind by before they are counted lost.
pub const L7_QUEUE: usize = 16_384;

/// What plugins get from core. Cheap to clone into tasks.
pub struct CoreContext {
    pub node_name: String,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub map_dir: PathBuf,
    pub events: broadcast::Sender<Arc<DatapathEvent>>,
    /// L7 records from the policy plugin's proxy to the flow pipeline.
    pub l7: broadcast::Sender<Arc<L7Record>>,
    pub view: Arc<RwLock<ClusterView>>,
    pub store: StateStore,
    /// Kernel ring buffer losses, kept current by the agent's counter poller.
    pub events_lost: Arc<AtomicU64>,
    /// The agent's ipcache: plugins add CIDR identities through it.
    pub ipcache: Arc<Mutex<Ipcache>>,
    /// The agent's metrics (map pressure reported by plugins).
    pub metrics: AgentMetrics,
    /// `[agent] node_ip`.
    pub node_ip: Option<IpAddr>,
    /// Policy objects' `Valid` conditions, written through the datastore.
    pub policy_conditions: PolicyConditions,
    /// The agent, for the node device program (tunnel attachments).
    pub(crate) agent: std::sync::Weak<super::run::Agent>,
    /// The policy ids of the policy maps and what they stand for (the policy plugin's).
    pub policies: RwLock<Arc<PolicyTable>>,
}

impl CoreContext {
    /// Applies `change` to the ipcache and writes the differences to the datapath.
    fn change_ipcache(
        &self,
        change: impl FnOnce(&mut crate::ipcache::Ipcache),
    ) -> Result<(), IpcacheWriteError> {
        let mut ipcache = lock(&self.ipcache);
        change(&mut ipcache);
        let path = self.map_dir.join(MAP_IPCACHE);
        let mut map = IpCache::open(&path)
            .map_err(|e| IpcacheWriteError(format!("opening {}: {e}", path.display())))?;
        ipcache.sync(&mut IpcacheMap(&mut map)).map_err(|e| {
            ipcache.mark_unsynced();
            IpcacheWriteError(e.to_string())
        })?;
        Ok(())
    }
}

impl PluginContext for CoreContext {
    fn attach_tunnel_program(&self, ifname: &str) -> Result<(), String> {
        let Some(agent) = self.agent.upgrade() else {
            return Ok(());
        };
        let mut extras = lock(&agent.datapath_extras);
        // No node device program (NodePort off): nothing comes back through the tunnel
        // for it. A later reload attaches it to the tunnel too (`devices` lists it).
        let Some(host) = extras.host.as_mut() else {
            return Ok(());
        };
        host.attach_tunnel(ifname)
            .map(|state| tracing::info!(device = ifname, ?state, "tunnel program attached"))
            .map_err(|e| e.to_string())
    }

    fn node_name(&self) -> &str {
        &self.node_name
    }

    fn state_dir(&self) -> PathBuf {
        self.state_dir.clone()
    }

    fn run_dir(&self) -> PathBuf {
        self.run_dir.clone()
    }

    fn map_pin_path(&self, map: &str) -> PathBuf {
        self.map_dir.join(map)
    }

    fn subscribe_events(&self) -> broadcast::Receiver<Arc<DatapathEvent>> {
        self.events.subscribe()
    }

    fn publish_l7(&self, record: L7Record) {
        // No subscriber (observe disabled) is not an error.
        let _ = self.l7.send(Arc::new(record));
    }

    fn l7_wanted(&self) -> bool {
        self.l7.receiver_count() > 0
    }

    fn subscribe_l7(&self) -> Option<broadcast::Receiver<Arc<L7Record>>> {
        Some(self.l7.subscribe())
    }

    fn publish_policies(&self, table: Arc<PolicyTable>) {
        *self
            .policies
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = table;
    }

    fn policy(&self, id: u32) -> Option<PolicyInfo> {
        self.policies
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    fn resolve_endpoint(&self, ip: IpAddr) -> Option<EndpointMeta> {
        self.view.read().ok()?.by_ip.get(&ip).cloned()
    }

    fn identity_labels(&self, identity: u32) -> Option<Vec<String>> {
        if let Some(reserved) = ReservedIdentity::from_id(identity) {
            return Some(reserved.labels().to_strings());
        }
        self.view
            .read()
            .ok()?
            .identity_labels
            .get(&identity)
            .cloned()
    }

    fn state(&self) -> Arc<dyn ClusterState> {
        let snapshot = self.store.snapshot();
        let view = self
            .view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::new(SnapshotState::new(snapshot, &view))
    }

    fn datapath_events_lost(&self) -> u64 {
        self.events_lost.load(Ordering::Relaxed)
    }

    fn set_cidr_identities(&self, prefixes: &[CidrIdentity]) -> Result<(), IpcacheWriteError> {
        let mut wanted = BTreeMap::new();
        for p in prefixes {
            let net = IpNet::new(p.addr, p.prefix_len).map_err(|e| {
                IpcacheWriteError(format!("invalid prefix {}/{}: {e}", p.addr, p.prefix_len))
            })?;
            wanted.insert(net.trunc(), p.identity);
        }
        self.change_ipcache(|ipcache| {
            let shadowed = ipcache.replace_source(Source::CidrPolicy, &wanted);
            if shadowed > 0 {
                tracing::debug!(
                    shadowed,
                    "CIDR prefixes held by pods or nodes keep their identity"
                );
            }
        })
    }

    fn report_policy_validity(&self, all: &[porin_plugin_sdk::PolicyValidity]) {
        self.policy_conditions.report(all);
    }

    fn node_ip(&self) -> Option<IpAddr> {
        self.node_ip
    }

    fn upsert_fqdn_addresses(&self, entries: &[CidrIdentity]) -> Result<(), IpcacheWriteError> {
        let mut nets = Vec::with_capacity(entries.len());
        for e in entries {
            let net = IpNet::new(e.addr, e.prefix_len).map_err(|err| {
                IpcacheWriteError(format!(
                    "invalid address {}/{}: {err}",
                    e.addr, e.prefix_len
                ))
            })?;
            nets.push((net, e.identity));
        }
        self.change_ipcache(|ipcache| {
            for (net, identity) in nets {
                ipcache.upsert(net, identity, Source::Fqdn);
            }
        })
    }

    fn remove_fqdn_addresses(&self, addrs: &[IpAddr]) -> Result<(), IpcacheWriteError> {
        self.change_ipcache(|ipcache| {
            for addr in addrs {
                ipcache.remove(IpNet::from(*addr), Source::Fqdn);
            }
        })
    }

    fn set_map_pressure(&self, map: &str, ratio: f64) {
        self.metrics.set_map_pressure(map, ratio);
    }
}
