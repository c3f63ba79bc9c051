use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use porin_plugin_sdk::{Health, Plugin, PluginContext, PluginError, StateChangeSummary, Switch};
use tracing::{error, info};

use crate::api::PluginStatus;

pub use crate::config::PluginSection;

struct Entry {
    plugin: Box<dyn Plugin>,
    enabled: bool,
    started: bool,
    /// Set when a lifecycle call failed; wins over the plugin's own health.
    failure: Option<String>,
}

/// All plugins of this agent, built-in and (later) native.
pub struct PluginManager {
    entries: Vec<Entry>,
}

impl PluginManager {
    /// The statically registered plugins, all disabled until configured.
    pub fn new(plugins: Vec<Box<dyn Plugin>>) -> Self {
        Self {
            entries: plugins
                .into_iter()
                .map(|plugin| Entry {
                    plugin,
                    enabled: false,
                    started: false,
                    failure: None,
                })
                .collect(),
        }
    }

    /// Names of the registered plugins.
    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.plugin.name()).collect()
    }

    /// Hand each enabled plugin its section. Every problem is returned, not only
    /// the first, so a user fixes the file in one go.
    pub fn configure(
        &mut self,
        sections: &BTreeMap<&str, PluginSection>,
    ) -> Result<(), Vec<PluginError>> {
        let mut errors = Vec::new();
        for name in sections.keys() {
            if !self.entries.iter().any(|e| e.plugin.name() == *name) {
                errors.push(PluginError::Config {
                    plugin: (*name).to_string(),
                    key: None,
                    message: format!("unknown plugin (known: {})", self.names().join(", ")),
                });
            }
        }
        for entry in &mut self.entries {
            let Some(section) = sections.get(entry.plugin.name()) else {
                entry.enabled = false;
                continue;
            };
            entry.enabled = section.enabled;
            if !section.enabled {
                continue;
            }
            let name = entry.plugin.name();
            match catch_unwind(AssertUnwindSafe(|| {
                entry.plugin.configure(&section.settings)
            })) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e),
                Err(panic) => errors.push(PluginError::Config {
                    plugin: name.to_string(),
                    key: None,
                    message: format!(
                        "panicked while reading its configuration: {}",
                        panic_text(&panic)
                    ),
                }),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Load-time switches of all enabled plugins.
    pub fn switches(&self) -> Vec<Switch> {
        self.entries
            .iter()
            .filter(|e| e.enabled)
            .flat_map(|e| e.plugin.datapath().switches)
            .collect()
    }

    /// Devices that need the node device program, over all enabled plugins (sorted, unique).
    pub fn devices(&self) -> Vec<String> {
        let mut devices: Vec<String> = self
            .entries
            .iter()
            .filter(|e| e.enabled)
            .flat_map(|e| e.plugin.datapath().devices)
            .collect();
        devices.sort();
        devices.dedup();
        devices
    }

    /// Let every enabled plugin register its metrics in the agent's registry. A plugin
    /// that panics here is marked failed; the others go on.
    pub fn register_metrics(&mut self, registry: &mut prometheus_client::registry::Registry) {
        for entry in self.entries.iter_mut().filter(|e| e.enabled) {
            let name = entry.plugin.name();
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| {
                entry.plugin.register_metrics(registry);
            })) {
                let message = format!("panicked registering metrics: {}", panic_text(&panic));
                error!(plugin = name, %message, "plugin metrics");
                entry.failure = Some(message);
            }
        }
    }

    /// Start every enabled plugin; failures are recorded, never fatal.
    pub fn start_all(&mut self, ctx: &Arc<dyn PluginContext>) {
        for entry in self.entries.iter_mut().filter(|e| e.enabled && !e.started) {
            let name = entry.plugin.name();
            let outcome = catch_unwind(AssertUnwindSafe(|| entry.plugin.start(ctx.clone())));
            match flatten(outcome) {
                Ok(()) => {
                    info!(plugin = name, "plugin started");
                    entry.started = true;
                    entry.failure = None;
                }
                Err(message) => {
                    error!(plugin = name, %message, "plugin failed to start");
                    entry.failure = Some(message);
                }
            }
        }
    }

    /// Tell running plugins the state changed.
    pub fn reconcile_all(&mut self, change: &StateChangeSummary) {
        for entry in self.entries.iter_mut().filter(|e| e.started) {
            let name = entry.plugin.name();
            let outcome = catch_unwind(AssertUnwindSafe(|| entry.plugin.reconcile(change)));
            match flatten(outcome) {
                Ok(()) => entry.failure = None,
                Err(message) => {
                    error!(plugin = name, %message, "plugin failed to reconcile; it keeps its last good state");
                    entry.failure = Some(message);
                }
            }
        }
    }

    /// Stop every running plugin.
    pub fn stop_all(&mut self) {
        for entry in self.entries.iter_mut().filter(|e| e.started) {
            let name = entry.plugin.name();
            let outcome = catch_unwind(AssertUnwindSafe(|| entry.plugin.stop()));
            if let Err(message) = flatten(outcome) {
                error!(plugin = name, %message, "plugin failed to stop cleanly");
            }
            entry.started = false;
        }
    }

    /// Node annotations of every running plugin, merged (a later plugin wins a clash).
    pub fn node_annotations(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for entry in self.entries.iter().filter(|e| e.started) {
            if let Ok(annotations) =
                catch_unwind(AssertUnwindSafe(|| entry.plugin.node_annotations()))
            {
                out.extend(annotations);
            }
        }
        out
    }

    /// Nodes whose pod CIDR a running plugin routes itself.
    pub fn claimed_node_routes(&self) -> std::collections::BTreeSet<String> {
        self.entries
            .iter()
            .filter(|e| e.started)
            .filter_map(|e| catch_unwind(AssertUnwindSafe(|| e.plugin.claimed_node_routes())).ok())
            .flatten()
            .collect()
    }

    /// A running plugin's own status document; `None` when it is not running or has none.
    pub fn plugin_status(&self, name: &str) -> Option<serde_json::Value> {
        let entry = self
            .entries
            .iter()
            .find(|e| e.started && e.plugin.name() == name)?;
        catch_unwind(AssertUnwindSafe(|| entry.plugin.status_json()))
            .ok()
            .flatten()
    }

    /// Health of every plugin, enabled or not.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        self.entries
            .iter()
            .map(|e| PluginStatus {
                name: e.plugin.name().to_string(),
                enabled: e.enabled,
                health: match (&e.failure, e.enabled) {
                    (Some(message), _) => Health::Failed(message.clone()),
                    (None, false) => Health::Stopped,
                    (None, true) => catch_unwind(AssertUnwindSafe(|| e.plugin.health()))
                        .unwrap_or_else(|p| {
                            Health::Failed(format!("health check panicked: {}", panic_text(&p)))
                        }),
                },
            })
            .collect()
    }

    /// Whether every enabled plugin is healthy.
    pub fn all_healthy(&self) -> bool {
        self.statuses()
            .iter()
            .all(|s| !s.enabled || s.health.is_ok())
    }
}

fn flatten(outcome: std::thread::Result<Result<(), PluginError>>) -> Result<(), String> {
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(format!("panicked: {}", panic_text(&panic))),
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::path::PathBuf;

    use porin_plugin_sdk::{DatapathContribution, DatapathEvent, EndpointMeta};
    use tokio::sync::broadcast;

    #[derive(Default)]
    struct Fake {
        name: &'static str,
        fail_start: bool,
        panic_start: bool,
        started: bool,
    }

    impl Plugin for Fake {
        fn name(&self) -> &'static str {
            self.name
        }
        fn configure(&mut self, section: &toml::Table) -> Result<(), PluginError> {
            match section.keys().next() {
                Some(key) => Err(PluginError::Config {
                    plugin: self.name.to_string(),
                    key: Some(key.clone()),
                    message: format!("unknown field `{key}`"),
                }),
                None => Ok(()),
            }
        }
        fn datapath(&self) -> DatapathContribution {
            DatapathContribution {
                switches: vec![Switch {
                    name: "CFG_FAKE",
                    value: 1,
                }],
                maps: vec![],
                devices: vec![],
            }
        }
        fn start(&mut self, _ctx: Arc<dyn PluginContext>) -> Result<(), PluginError> {
            if self.panic_start {
                panic!("boom");
            }
            if self.fail_start {
                return Err(PluginError::Start {
                    plugin: self.name.to_string(),
                    message: "no luck".to_string(),
                });
            }
            self.started = true;
            Ok(())
        }
        fn stop(&mut self) -> Result<(), PluginError> {
            self.started = false;
            Ok(())
        }
        fn health(&self) -> Health {
            if self.started {
                Health::Ok
            } else {
                Health::Stopped
            }
        }
    }

    struct NoContext(broadcast::Sender<Arc<DatapathEvent>>);

    impl PluginContext for NoContext {
        fn node_name(&self) -> &str {
            "test"
        }
        fn state_dir(&self) -> PathBuf {
            PathBuf::from("/nonexistent")
        }
        fn run_dir(&self) -> PathBuf {
            PathBuf::from("/nonexistent")
        }
        fn map_pin_path(&self, map: &str) -> PathBuf {
            PathBuf::from(map)
        }
        fn subscribe_events(&self) -> broadcast::Receiver<Arc<DatapathEvent>> {
            self.0.subscribe()
        }
        fn resolve_endpoint(&self, _ip: IpAddr) -> Option<EndpointMeta> {
            None
        }
        fn identity_labels(&self, _identity: u32) -> Option<Vec<String>> {
            None
        }
        fn state(&self) -> Arc<dyn porin_plugin_sdk::ClusterState> {
            Arc::new(porin_plugin_sdk::state::EmptyState)
        }
    }

    fn sections<'a>(enabled: &[&'a str]) -> BTreeMap<&'a str, PluginSection> {
        enabled
            .iter()
            .map(|n| {
                (
                    *n,
                    PluginSection {
                        enabled: true,
                        settings: toml::Table::new(),
                    },
                )
            })
            .collect()
    }

    fn manager() -> PluginManager {
        PluginManager::new(vec![
            Box::new(Fake {
                name: "good",
                ..Fake::default()
            }),
            Box::new(Fake {
                name: "bad",
                fail_start: true,
                ..Fake::default()
            }),
            Box::new(Fake {
                name: "wild",
                panic_start: true,
                ..Fake::default()
            }),
            Box::new(Fake {
                name: "off",
                ..Fake::default()
            }),
        ])
    }

    #[test]
    fn failing_plugins_are_reported_and_others_run() {
        let mut m = manager();
        m.configure(&sections(&["good", "bad", "wild"]))
            .expect("valid config");
        assert_eq!(m.switches().len(), 3, "switches of enabled plugins only");
        let ctx: Arc<dyn PluginContext> = Arc::new(NoContext(broadcast::channel(1).0));
        m.start_all(&ctx);
        let st = m.statuses();
        assert_eq!(st[0].health, Health::Ok);
        assert!(matches!(&st[1].health, Health::Failed(m) if m.contains("no luck")));
        assert!(matches!(&st[2].health, Health::Failed(m) if m.contains("boom")));
        assert_eq!(st[3].health, Health::Stopped);
        assert!(!st[3].enabled);
        assert!(!m.all_healthy());
        m.stop_all();
        assert_eq!(m.statuses()[0].health, Health::Stopped);
    }

    #[test]
    fn unknown_plugins_and_bad_sections_are_all_reported() {
        let mut m = manager();
        let mut s = sections(&["good", "nope"]);
        let mut bad = toml::Table::new();
        bad.insert("sise".to_string(), toml::Value::Integer(1));
        s.insert(
            "bad",
            PluginSection {
                enabled: true,
                settings: bad,
            },
        );
        let errors = m.configure(&s).expect_err("two problems");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors
                .iter()
                .any(|e| e.to_string().contains("plugins.nope: unknown plugin"))
        );
        assert!(errors.iter().any(|e| e.config_key() == Some("sise")));
    }
}
