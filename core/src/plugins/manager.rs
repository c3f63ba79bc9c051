use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use porin_plugin_sdk::{Health, Plugin, PluginContext, PluginError, StateChangeSummary, Switch};
use tracing::{error, info, warn};

use crate::api::PluginStatus;

use crate::config::NativePluginConfig;
pub use crate::config::PluginSection;

struct Entry {
    plugin: Box<dyn Plugin>,
    /// For a native plugin: where it was loaded from and its settings, to load it again
    /// after a runtime disable unloaded it.
    native: Option<NativePluginConfig>,
    enabled: bool,
    started: bool,
    /// Set when a lifecycle call failed; wins over the plugin's own health.
    failure: Option<String>,
    /// Whether the plugin registered its metrics (in the agent's registry at start, or in
    /// `late_metrics` when it was first enabled at runtime).
    metrics_registered: bool,
    /// The metrics of a built-in plugin first enabled at runtime (the agent's registry is
    /// frozen once served), appended to every scrape.
    late_metrics: Option<prometheus_client::registry::Registry>,
}

/// All plugins of this agent, built-in and native.
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
                    native: None,
                    enabled: false,
                    started: false,
                    failure: None,
                    metrics_registered: false,
                    late_metrics: None,
                })
                .collect(),
        }
    }

    /// Loads and configures a `[[plugins.native]]` entry and adds it, enabled (a failed
    /// load is listed as a failed plugin).
    pub fn add_native(&mut self, config: &NativePluginConfig) {
        self.entries.push(Entry {
            plugin: super::native::load_configured(config),
            native: Some(config.clone()),
            enabled: true,
            started: false,
            failure: None,
            metrics_registered: false,
            late_metrics: None,
        });
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
            entry.metrics_registered = true;
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

    /// Turns plugin `name` off at runtime: stops it (its tasks end) and, for a native
    /// plugin, unloads its object. Returns false when it was already off.
    pub fn disable(&mut self, name: &str) -> Result<bool, String> {
        let entry = self.entry_mut(name)?;
        if !entry.enabled && !entry.started {
            return Ok(false);
        }
        if entry.started {
            let outcome = catch_unwind(AssertUnwindSafe(|| entry.plugin.stop()));
            if let Err(message) = flatten(outcome) {
                warn!(plugin = name, %message, "plugin failed to stop cleanly");
            }
            entry.started = false;
        }
        entry.enabled = false;
        entry.failure = None;
        if let Some(config) = &entry.native {
            // Dropping the plugin destroys it and unloads its object.
            entry.plugin = Box::new(super::native::Unloadable::disabled(
                entry.plugin.name(),
                &config.path,
            ));
        }
        info!(plugin = name, "plugin disabled");
        Ok(true)
    }

    /// Takes plugin `name` out of the datapath contributions ([`Self::switches`],
    /// [`Self::devices`]) while it keeps running, so the programs can drop its feature
    /// before [`Self::disable`] stops it. Returns whether it was enabled.
    pub fn mark_disabled(&mut self, name: &str) -> Result<bool, String> {
        let entry = self.entry_mut(name)?;
        Ok(std::mem::replace(&mut entry.enabled, false))
    }

    /// Turns plugin `name` on at runtime: configures it with `section` (built-in plugins)
    /// or loads its object again (native ones) and starts it from the current state. A
    /// configuration error leaves it off and is returned; a start failure is recorded in
    /// its health like at agent start. Returns false when it was already on.
    pub fn enable(
        &mut self,
        name: &str,
        section: Option<&PluginSection>,
        ctx: &Arc<dyn PluginContext>,
    ) -> Result<bool, String> {
        let entry = self.entry_mut(name)?;
        if entry.enabled {
            return Ok(false);
        }
        if let Some(config) = &entry.native {
            entry.plugin = super::native::load_configured(config);
        } else {
            let empty = PluginSection::default();
            let settings = &section.unwrap_or(&empty).settings;
            let outcome = catch_unwind(AssertUnwindSafe(|| entry.plugin.configure(settings)));
            flatten(outcome)?;
            if !entry.metrics_registered {
                let mut registry = prometheus_client::registry::Registry::default();
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    entry.plugin.register_metrics(&mut registry);
                }));
                if let Err(panic) = outcome {
                    let message = format!("panicked registering metrics: {}", panic_text(&panic));
                    error!(plugin = name, %message, "plugin metrics");
                } else {
                    entry.late_metrics = Some(registry);
                }
                entry.metrics_registered = true;
            }
        }
        entry.enabled = true;
        entry.failure = None;
        let outcome = catch_unwind(AssertUnwindSafe(|| entry.plugin.start(ctx.clone())));
        match flatten(outcome) {
            Ok(()) => {
                entry.started = true;
                info!(plugin = name, "plugin enabled");
            }
            Err(message) => {
                error!(plugin = name, %message, "plugin failed to start");
                entry.failure = Some(message);
            }
        }
        Ok(true)
    }

    /// Metrics outside the agent's registry, in the OpenMetrics text format without
    /// `# EOF`: those of running native plugins (their own registries, read through the
    /// ABI) and of built-in plugins first enabled at runtime.
    pub fn extra_metrics_text(&self) -> String {
        let native: String = self
            .entries
            .iter()
            .filter(|e| e.started && e.native.is_some())
            .filter_map(|e| {
                catch_unwind(AssertUnwindSafe(|| e.plugin.status_json()))
                    .ok()
                    .flatten()
            })
            .filter_map(|status| status.get("metrics")?.as_str().map(str::to_string))
            .collect();
        let late = self
            .entries
            .iter()
            .filter(|e| e.started)
            .filter_map(|e| e.late_metrics.as_ref())
            .filter_map(|registry| {
                let mut text = String::new();
                prometheus_client::encoding::text::encode(&mut text, registry).ok()?;
                Some(text.replace("# EOF\n", ""))
            });
        std::iter::once(native).chain(late).collect()
    }

    /// Whether plugin `name` is enabled; `None` for an unknown name.
    pub fn is_enabled(&self, name: &str) -> Option<bool> {
        self.entries
            .iter()
            .find(|e| e.plugin.name() == name)
            .map(|e| e.enabled)
    }

    /// The `[[plugins.native]]` entries this manager holds (loaded or not).
    pub fn native_configs(&self) -> Vec<(&'static str, NativePluginConfig)> {
        self.entries
            .iter()
            .filter_map(|e| e.native.clone().map(|n| (e.plugin.name(), n)))
            .collect()
    }

    /// Replaces the `[[plugins.native]]` entry behind plugin `name` (used on its next load).
    pub fn update_native(&mut self, name: &str, config: NativePluginConfig) {
        if let Ok(entry) = self.entry_mut(name)
            && entry.native.is_some()
        {
            entry.native = Some(config);
        }
    }

    fn entry_mut(&mut self, name: &str) -> Result<&mut Entry, String> {
        let known = self.names().join(", ");
        self.entries
            .iter_mut()
            .find(|e| e.plugin.name() == name)
            .ok_or_else(|| format!("unknown plugin `{name}` (known: {known})"))
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
    porin_plugin_sdk::native::guest::panic_text(&**panic)
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
        fn register_metrics(&mut self, registry: &mut prometheus_client::registry::Registry) {
            let counter = prometheus_client::metrics::counter::Counter::<u64>::default();
            counter.inc();
            registry.register("porin_fake_starts", "Fake plugin metric", counter);
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

    #[test]
    fn runtime_toggles_stop_start_and_move_switches() {
        let mut m = manager();
        m.configure(&sections(&["good"])).expect("valid config");
        let ctx: Arc<dyn PluginContext> = Arc::new(NoContext(broadcast::channel(1).0));
        m.start_all(&ctx);
        assert_eq!(m.switches().len(), 1);

        // Off: switches leave first, then the plugin stops.
        assert_eq!(m.mark_disabled("good"), Ok(true));
        assert!(m.switches().is_empty());
        assert_eq!(m.statuses()[0].health, Health::Stopped);
        assert_eq!(m.disable("good"), Ok(true));
        assert_eq!(m.disable("good"), Ok(false), "already off");
        assert_eq!(m.is_enabled("good"), Some(false));

        // On again, from its section: started, switch back.
        let section = PluginSection::default();
        assert_eq!(m.enable("good", Some(&section), &ctx), Ok(true));
        assert_eq!(
            m.enable("good", Some(&section), &ctx),
            Ok(false),
            "already on"
        );
        assert_eq!(m.statuses()[0].health, Health::Ok);
        assert_eq!(m.switches().len(), 1);

        // A bad section keeps it off; a failing start is recorded, not fatal.
        let mut bad = toml::Table::new();
        bad.insert("sise".to_string(), toml::Value::Integer(1));
        let bad = PluginSection {
            enabled: true,
            settings: bad,
        };
        let err = m.enable("off", Some(&bad), &ctx).expect_err("bad section");
        assert!(err.contains("sise"), "{err}");
        assert_eq!(m.is_enabled("off"), Some(false));
        assert_eq!(m.enable("bad", None, &ctx), Ok(true));
        assert!(matches!(&m.statuses()[1].health, Health::Failed(msg) if msg.contains("no luck")));
        assert!(
            m.enable("nope", None, &ctx)
                .is_err_and(|e| e.contains("unknown plugin `nope`"))
        );
    }

    #[test]
    fn a_plugin_first_enabled_at_runtime_serves_its_metrics() {
        let mut m = manager();
        m.configure(&sections(&["bad"])).expect("valid config");
        let mut registry = prometheus_client::registry::Registry::default();
        m.register_metrics(&mut registry);
        let ctx: Arc<dyn PluginContext> = Arc::new(NoContext(broadcast::channel(1).0));
        m.start_all(&ctx);
        assert!(
            !m.extra_metrics_text().contains("porin_fake_starts"),
            "good is off: no metrics yet"
        );
        assert_eq!(m.enable("good", None, &ctx), Ok(true));
        let text = m.extra_metrics_text();
        assert!(text.contains("porin_fake_starts_total 1"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        // Off again: not served; on again: the same registry, not registered twice.
        assert_eq!(m.mark_disabled("good"), Ok(true));
        assert_eq!(m.disable("good"), Ok(true));
        assert!(!m.extra_metrics_text().contains("porin_fake_starts"));
        assert_eq!(m.enable("good", None, &ctx), Ok(true));
        assert_eq!(
            m.extra_metrics_text()
                .matches("# TYPE porin_fake_starts")
                .count(),
            1
        );
    }
}
