//! The load-balancing plugin's lifecycle.

use std::sync::Arc;

use porin_plugin_sdk::{DatapathContribution, Health, Plugin, PluginContext, PluginError, Switch};
use tracing::info;

use crate::LbConfig;

/// The section name in `porin.toml`.
pub const NAME: &str = "lb";

/// The lb plugin: configuration and lifecycle (runtime work comes later).
#[derive(Default)]
pub struct LbPlugin {
    config: LbConfig,
    health: Option<Health>,
}

impl LbPlugin {
    pub fn new() -> Self {
        Self::default()
    }

    /// The validated configuration.
    pub fn config(&self) -> &LbConfig {
        &self.config
    }
}

impl Plugin for LbPlugin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn configure(&mut self, section: &toml::Table) -> Result<(), PluginError> {
        self.config = LbConfig::from_section(section)?;
        Ok(())
    }

    fn datapath(&self) -> DatapathContribution {
        DatapathContribution {
            switches: vec![
                Switch {
                    name: "CFG_ENABLE_LB",
                    value: 1,
                },
                Switch {
                    name: "CFG_ENABLE_SOCKET_LB",
                    value: u32::from(self.config.socket_lb),
                },
                Switch {
                    name: "CFG_LB_MAGLEV",
                    value: u32::from(self.config.algorithm == crate::Algorithm::Maglev),
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
