//! The observability plugin's lifecycle.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use porin_plugin_sdk::{DatapathContribution, Health, Plugin, PluginContext, PluginError, Switch};
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::ObserveConfig;
use crate::pipeline::run_pipeline;
use crate::ring::FlowRing;
use crate::server::serve_flows;

/// File name of the flow socket in the agent's run directory.
pub const FLOWS_SOCKET_NAME: &str = "flows.sock";

/// The section name in `porin.toml`.
pub const NAME: &str = "observe";

/// The observe plugin: turns datapath events into flows, keeps the newest in a
/// ring and serves them on the flow socket for `porin observe`.
#[derive(Default)]
pub struct ObservePlugin {
    config: ObserveConfig,
    health: Option<Health>,
    ring: Option<Arc<FlowRing>>,
    lost: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
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
                name: "CFG_EMIT_EVENTS",
                value: 1,
            }],
            maps: vec![],
        }
    }

    fn start(&mut self, ctx: Arc<dyn PluginContext>) -> Result<(), PluginError> {
        let ring = Arc::new(FlowRing::new(self.config.buffer_size as usize));
        let socket = ctx.run_dir().join(FLOWS_SOCKET_NAME);
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| PluginError::Start {
            plugin: NAME.to_string(),
            message: format!("no async runtime: {e}"),
        })?;
        self.tasks
            .push(runtime.spawn(run_pipeline(ctx.clone(), ring.clone(), self.lost.clone())));
        let served = ring.clone();
        self.tasks.push(runtime.spawn(async move {
            if let Err(e) = serve_flows(&socket, served).await {
                error!(plugin = NAME, socket = %socket.display(), error = %e, "flow socket stopped");
            }
        }));
        self.ring = Some(ring);
        info!(plugin = NAME, "started");
        self.health = Some(Health::Ok);
        Ok(())
    }

    fn stop(&mut self) -> Result<(), PluginError> {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.ring = None;
        info!(plugin = NAME, "stopped");
        self.health = Some(Health::Stopped);
        Ok(())
    }

    fn health(&self) -> Health {
        self.health.clone().unwrap_or(Health::Starting)
    }
}
