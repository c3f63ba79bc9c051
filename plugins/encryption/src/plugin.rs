//! The encryption plugin's lifecycle.

use std::sync::Arc;

use porin_plugin_sdk::{DatapathContribution, Health, Plugin, PluginContext, PluginError, Switch};
use tracing::info;

use crate::EncryptionConfig;

/// The section name in `porin.toml`.
pub const NAME: &str = "encryption";

/// The encryption plugin: configuration and lifecycle (runtime work comes later).
#[derive(Default)]
pub struct EncryptionPlugin {
    config: EncryptionConfig,
    health: Option<Health>,
}

impl EncryptionPlugin {
    pub fn new() -> Self {
        Self::default()
    }

    /// The validated configuration.
    pub fn config(&self) -> &EncryptionConfig {
        &self.config
    }
}

impl Plugin for EncryptionPlugin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn configure(&mut self, section: &toml::Table) -> Result<(), PluginError> {
        self.config = EncryptionConfig::from_section(section)?;
        Ok(())
    }

    fn datapath(&self) -> DatapathContribution {
        DatapathContribution {
            switches: vec![
                Switch {
                    name: "CFG_ENABLE_WIREGUARD",
                    value: 1,
                },
                Switch {
                    name: "CFG_ENCRYPTION_STRICT",
                    value: u32::from(self.config.strict_mode),
                },
            ],
            maps: vec![],
            devices: vec![],
        }
    }

    fn start(&mut self, _ctx: Arc<dyn PluginContext>) -> Result<(), PluginError> {
        info!(plugin = NAME, "started");
        self.health = Some(Health::Ok);
        Ok(())
    }

    fn stop(&mut self) -> Result<(), PluginError> {
        info!(plugin = NAME, "stopped");
        self.health = Some(Health::Stopped);
        Ok(())
    }

    fn health(&self) -> Health {
        self.health.clone().unwrap_or(Health::Starting)
    }
}
