//! The `Plugin` trait every feature implements.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{DatapathContribution, Health, PluginContext, PluginError};

/// A summary of what changed in the cluster state, handed to `reconcile`.
/// Plugins read the current state through their context; the summary only
/// tells them which kinds changed so they can skip irrelevant work.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateChangeSummary {
    /// Kinds that changed, e.g. "Pod", "Service", "CiliumNetworkPolicy".
    pub kinds: Vec<String>,
    /// The objects that changed, when core knows them all. Empty while `kinds` is not
    /// means "unknown" (e.g. the change feed lagged): a plugin then resyncs in full.
    pub objects: Vec<ChangedObject>,
}

/// One object that changed (added, modified or deleted).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChangedObject {
    pub kind: String,
    /// None for cluster-scoped kinds.
    pub namespace: Option<String>,
    pub name: String,
}

impl StateChangeSummary {
    /// Whether `kind` is among the changed kinds.
    pub fn touches(&self, kind: &str) -> bool {
        self.kinds.iter().any(|k| k == kind)
    }
}

/// A feature of Porin. Built-in plugins are registered statically and switched
/// by `enabled` in their `porin.toml` section.
///
/// Lifecycle: `configure` (validate the section) → `datapath` (switches, read once
/// before programs load) → `start` → any number of `reconcile` → `stop`.
/// `health` may be called at any time.
pub trait Plugin: Send {
    /// The section name in `porin.toml` (`[plugins.<name>]`).
    fn name(&self) -> &'static str;

    /// Parse and validate this plugin's section (all keys but `enabled`).
    fn configure(&mut self, section: &toml::Table) -> Result<(), PluginError>;

    /// Register this plugin's metrics in the agent's registry, served with core's on the
    /// agent metrics endpoint (`[agent] metrics_address`, `:9962`). Called once for an
    /// enabled plugin, after `configure` and before `start`; the plugin keeps the handles
    /// and updates them. Names carry the plugin's prefix (`porin_<plugin>_...`).
    fn register_metrics(&mut self, _registry: &mut prometheus_client::registry::Registry) {}

    /// Load-time switches and maps this plugin needs.
    fn datapath(&self) -> DatapathContribution {
        DatapathContribution::default()
    }

    /// Start the plugin's work. Long-running work goes into tasks spawned on the
    /// current tokio runtime; `stop` must end them.
    fn start(&mut self, ctx: Arc<dyn PluginContext>) -> Result<(), PluginError>;

    /// The cluster state changed.
    fn reconcile(&mut self, _change: &StateChangeSummary) -> Result<(), PluginError> {
        Ok(())
    }

    /// Stop all tasks and release everything the plugin made.
    fn stop(&mut self) -> Result<(), PluginError>;

    /// Current health.
    fn health(&self) -> Health;

    /// Annotations this plugin adds to the Node object core publishes for this node
    /// (e.g. the encryption plugin's WireGuard public key and endpoint). Core reads them
    /// after `start` and after every `reconcile`, and republishes the Node when they change.
    fn node_annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// Other nodes whose pod CIDR this plugin routes itself (e.g. through a tunnel
    /// device); core installs no plain underlay route to them and removes its own.
    fn claimed_node_routes(&self) -> Vec<String> {
        Vec::new()
    }

    /// Plugin-specific runtime status, served by the agent API at
    /// `/v1/plugins/<name>/status` (e.g. `porin encrypt status`). `None`: nothing to report.
    fn status_json(&self) -> Option<serde_json::Value> {
        None
    }
}
