//! The network policy plugin's lifecycle.

use std::sync::Arc;

use porin_plugin_sdk::{DatapathContribution, Health, Plugin, PluginContext, PluginError, Switch};
use tracing::info;

use crate::PolicyConfig;

/// The section name in `porin.toml`.
pub const NAME: &str = "policy";

/// The policy plugin: configuration and lifecycle (runtime work comes later).
#[derive(Default)]
pub struct PolicyPlugin {
    config: PolicyConfig,
    health: Option<Health>,
}

impl PolicyPlugin {
    pub fn new() -> Self {
        Self::default()
    }

    /// The validated configuration.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
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
            maps: vec![],
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
