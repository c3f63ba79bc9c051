//! Configuration reload (SIGHUP, or the file changing): plugin changes are applied
//! without restarting the agent. A file with errors changes nothing (the last good
//! configuration stays); `[agent]` changes wait for the next restart.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::run::{Agent, lock};
use crate::config::Config;

/// How often the configuration file's modification time is checked.
const FILE_POLL: Duration = Duration::from_millis(500);

impl Agent {
    /// Reads the configuration again and applies what changed in the plugins. Errors
    /// name the file and line; nothing is changed when the file has any.
    pub(crate) fn reload_config(&self) {
        let config = match Config::from_file(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "configuration not reloaded; the last good one stays");
                return;
            }
        };
        if config.agent != self.config {
            warn!("changes to [agent] apply at the next agent restart");
        }
        let previous = lock(&self.plugin_sections).clone();
        for (&name, section) in &config.plugins {
            let on = lock(&self.plugins).is_enabled(name).unwrap_or(false);
            let settings_changed =
                previous.get(name).map(|p| &p.settings) != Some(&section.settings);
            let result = match (section.enabled, on) {
                (true, false) => self.enable_with(name, section),
                (false, true) => self
                    .set_plugin_enabled(name, false)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                (true, true) if settings_changed => {
                    // New settings: off, then on with them; back to the old ones if refused.
                    let _ = self.set_plugin_enabled(name, false);
                    self.enable_with(name, section).inspect_err(|_| {
                        if let Some(old) = previous.get(name) {
                            let _ = self.enable_with(name, old);
                        }
                    })
                }
                _ => Ok(()),
            };
            match result {
                Ok(()) => {
                    lock(&self.plugin_sections).insert(name, section.clone());
                }
                Err(message) => error!(plugin = name, %message, file = %self.config_path.display(),
                    "plugin change not applied; it keeps its last good state"),
            }
        }
        self.reload_natives(&config);
        info!(file = %self.config_path.display(), "configuration reloaded");
    }

    fn enable_with(
        &self,
        name: &'static str,
        section: &crate::config::PluginSection,
    ) -> Result<(), String> {
        let last = lock(&self.plugin_sections).insert(name, section.clone());
        let result = self
            .set_plugin_enabled(name, true)
            .map(|_| ())
            .map_err(|e| e.to_string());
        if result.is_err()
            && let Some(last) = last
        {
            lock(&self.plugin_sections).insert(name, last);
        }
        result
    }

    /// `[[plugins.native]]`: entries matched by path. New ones are loaded and started,
    /// entries gone or `enabled = false` are unloaded, changed settings load them again.
    fn reload_natives(&self, config: &Config) {
        let loaded = lock(&self.plugins).native_configs();
        for (name, current) in &loaded {
            let wanted = config
                .native
                .iter()
                .find(|n| n.path == current.path && n.enabled);
            let on = lock(&self.plugins).is_enabled(name).unwrap_or(false);
            let result = match wanted {
                None if on => self.set_plugin_enabled(name, false).map(|_| ()),
                Some(w) if w != current || !on => {
                    lock(&self.plugins).update_native(name, w.clone());
                    let _ = self.set_plugin_enabled(name, false);
                    self.set_plugin_enabled(name, true).map(|_| ())
                }
                _ => Ok(()),
            };
            if let Err(e) = result {
                error!(plugin = name, error = %e, "native plugin change not applied");
            }
        }
        let added: Vec<_> = config
            .native
            .iter()
            .filter(|n| n.enabled && !loaded.iter().any(|(_, l)| l.path == n.path))
            .collect();
        if added.is_empty() {
            return;
        }
        if let Some(ctx) = self.plugin_ctx.get() {
            let mut manager = lock(&self.plugins);
            for entry in added {
                manager.add_native(entry);
            }
            manager.start_all(ctx);
        }
        if let Err(e) = self.apply_datapath_shape() {
            error!(error = %e, "applying the datapath of new native plugins");
        }
    }
}

/// Reloads the configuration on SIGHUP and when the file changes, until `shutdown`.
pub(crate) fn spawn_reloader(agent: Arc<Agent>, shutdown: CancellationToken) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "no SIGHUP handler: reload on file change only");
            return spawn_file_watch_only(agent, shutdown);
        }
    };
    tokio::spawn(async move {
        let mut seen = modified(&agent.config_path);
        let mut tick = tokio::time::interval(FILE_POLL);
        loop {
            let reason = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = hangup.recv() => "SIGHUP",
                _ = tick.tick() => {
                    let now = modified(&agent.config_path);
                    if now == seen { continue; }
                    seen = now;
                    "file changed"
                }
            };
            info!(reason, "reloading the configuration");
            let agent = agent.clone();
            let _ = tokio::task::spawn_blocking(move || agent.reload_config()).await;
        }
    });
}

fn spawn_file_watch_only(agent: Arc<Agent>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut seen = modified(&agent.config_path);
        let mut tick = tokio::time::interval(FILE_POLL);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = modified(&agent.config_path);
            if now != seen {
                seen = now;
                let agent = agent.clone();
                let _ = tokio::task::spawn_blocking(move || agent.reload_config()).await;
            }
        }
    });
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
