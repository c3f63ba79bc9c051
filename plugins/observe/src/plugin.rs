//! The observability plugin's lifecycle.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use porin_plugin_sdk::{DatapathContribution, Health, Plugin, PluginContext, PluginError, Switch};
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::ObserveConfig;
use crate::grpc::HubbleService;
use crate::pipeline::run_pipeline;
use crate::ring::FlowRing;
use crate::serve::{bind_unix, serve_tcp};

/// The section name in `porin.toml`.
pub const NAME: &str = "observe";

/// The observe plugin: turns datapath events into flows, keeps the newest in a
/// ring and serves them with the Hubble API (unix socket, optionally TCP).
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

fn start_error(message: String) -> PluginError {
    PluginError::Start {
        plugin: NAME.to_string(),
        message,
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
        let socket = self.config.socket_path_in(&ctx.run_dir());
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| start_error(format!("no async runtime: {e}")))?;
        let address = match &self.config.listen_address {
            Some(a) => a.clone(),
            None => format!("unix://{}", socket.display()),
        };
        let service = HubbleService::new(ring.clone(), ctx.node_name(), address);
        // Bind in start() so a bad socket path fails the plugin, not a log line.
        let serving = {
            let _guard = runtime.enter();
            bind_unix(&socket, service.clone()).map_err(|e| start_error(e.to_string()))?
        };
        self.tasks
            .push(runtime.spawn(run_pipeline(ctx.clone(), ring.clone(), self.lost.clone())));
        self.tasks.push(runtime.spawn(async move {
            if let Err(e) = serving.await {
                error!(plugin = NAME, error = %e, "Hubble API stopped");
            }
        }));
        if let Some(listen) = self.config.listen_address.clone() {
            self.tasks.push(runtime.spawn(async move {
                if let Err(e) = serve_tcp(&listen, service).await {
                    error!(plugin = NAME, error = %e, "Hubble API on TCP stopped");
                }
            }));
        }
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
