//! A `[[plugins.native]]` entry whose object could not be loaded: listed as failed with
//! the reason (e.g. an ABI version mismatch) so `porin plugins list` shows it, while the
//! agent and the other plugins run.

use std::path::Path;
use std::sync::Arc;

use porin_plugin_sdk::{Health, Plugin, PluginContext, PluginError};

pub struct Unloadable {
    name: &'static str,
    reason: String,
}

impl Unloadable {
    /// Named after the file (`libfoo.so` → `libfoo`).
    pub fn new(path: &Path, reason: String) -> Self {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Self {
            name: Box::leak(stem.into_boxed_str()),
            reason,
        }
    }
}

impl Unloadable {
    /// A native plugin turned off at runtime: its object is unloaded, its entry stays.
    pub fn disabled(name: &'static str, path: &Path) -> Self {
        Self {
            name,
            reason: format!("disabled; {} is not loaded", path.display()),
        }
    }
}

impl Plugin for Unloadable {
    fn name(&self) -> &'static str {
        self.name
    }

    fn configure(&mut self, _section: &toml::Table) -> Result<(), PluginError> {
        Ok(())
    }

    fn start(&mut self, _ctx: Arc<dyn PluginContext>) -> Result<(), PluginError> {
        Err(PluginError::Start {
            plugin: self.name.to_string(),
            message: self.reason.clone(),
        })
    }

    fn stop(&mut self) -> Result<(), PluginError> {
        Ok(())
    }

    fn health(&self) -> Health {
        Health::Failed(self.reason.clone())
    }
}
