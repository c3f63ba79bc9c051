//! Errors a plugin reports to core.

use thiserror::Error;

/// What went wrong inside a plugin; core shows it in `porin status` and
/// `porin plugins list` and keeps the other plugins running.
#[derive(Debug, Error)]
pub enum PluginError {
    /// The plugin's section of `porin.toml` is invalid. `key` is the dotted path of
    /// the offending key inside the section, when known, so core can name its line.
    #[error("plugins.{plugin}: {message}")]
    Config {
        plugin: String,
        key: Option<String>,
        message: String,
    },
    /// Starting the plugin failed.
    #[error("plugin {plugin} failed to start: {message}")]
    Start { plugin: String, message: String },
    /// Reconciling a state change failed; the plugin keeps its last good state.
    #[error("plugin {plugin} failed to reconcile: {message}")]
    Reconcile { plugin: String, message: String },
    /// Stopping the plugin left something behind.
    #[error("plugin {plugin} failed to stop cleanly: {message}")]
    Stop { plugin: String, message: String },
}

impl PluginError {
    /// The key a configuration error points at, if any.
    pub fn config_key(&self) -> Option<&str> {
        match self {
            Self::Config { key, .. } => key.as_deref(),
            _ => None,
        }
    }
}
