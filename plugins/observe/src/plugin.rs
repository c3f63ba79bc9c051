//! The observability plugin's lifecycle.

use std::sync::Arc;

use porin_plugin_sdk::{DatapathContribution, Health, Plugin, PluginContext, PluginError, Switch};
use tracing::info;

use crate::ObserveConfig;

/// The section name in `porin.toml`.
pub const NAME: &str = "observe";

/// The observe plugin: configuration and lifecycle (runtime work comes later).
#[derive(Default)]
pub struct ObservePlugin {
    config: ObserveConfig,
    health: Option<Health>,
}

impl ObservePlugin {
    pub fn new() -> Self {
        Self::default()
    }

    /// The validated configuration.
    pub fn config(&self) -> &ObserveConfig {
        &self.config
    }
}

impl Plugin for ObservePlugin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn configure(&mut self, section: &toml::Table) -> Result<(), PluginError> {
        self.config = ObserveConfig::from_section(section)?;
        Ok(())
    }

    fn datapath(&self) -> DatapathContribution {
        DatapathContribution {
            switches: vec![Switch {
                name: "CFG_ENABLE_FLOW_EVENTS",
                value: 1,
            }],
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
