//! The load-balancing plugin's lifecycle: open the LB maps, and on start and on every
//! relevant state change program them from the cluster's Services and EndpointSlices.

use std::sync::Arc;

use porin_core::datapath::LbMaps;
use porin_plugin_sdk::{
    DEFAULT_DEVICE, DatapathContribution, Health, Plugin, PluginContext, PluginError,
    StateChangeSummary, Switch,
};
use tracing::{debug, info, warn};

use crate::LbConfig;
use crate::desired::{ClusterObjects, DesiredServices, desired_services};
use crate::programmer::Programmer;

/// The section name in `porin.toml`.
pub const NAME: &str = "lb";

/// Kinds whose changes can change services or their backends.
const WATCHED_KINDS: [&str; 4] = ["Service", "EndpointSlice", "Pod", "CiliumEndpoint"];

/// The lb plugin.
#[derive(Default)]
pub struct LbPlugin {
    config: LbConfig,
    health: Option<Health>,
    running: Option<Running>,
    /// What was last programmed, for `porin service list`.
    served: DesiredServices,
}

struct Running {
    ctx: Arc<dyn PluginContext>,
    maps: LbMaps,
    programmer: Programmer,
}

impl LbPlugin {
    pub fn new() -> Self {
        Self::default()
    }

    /// The validated configuration.
    pub fn config(&self) -> &LbConfig {
        &self.config
    }

    fn nodeport_on(&self) -> bool {
        self.config.kube_proxy_replacement && self.config.nodeport
    }

    /// Programs the maps from the current state. Failures degrade health and are retried
    /// on the next change; they never stop the agent.
    fn program(&mut self) {
        let Some(run) = self.running.as_mut() else {
            return;
        };
        let state = run.ctx.state();
        let (services, slices, pods, addresses) = (
            state.services(),
            state.endpoint_slices(),
            state.pods(),
            state.pod_addresses(),
        );
        let desired = desired_services(&ClusterObjects {
            services: &services,
            slices: &slices,
            pods: &pods,
            addresses: &addresses,
        });
        let report = run.programmer.sync(&desired, &mut run.maps);
        self.served = desired;
        debug!(
            plugin = NAME,
            generation = state.generation(),
            frontends = run.programmer.service_count(),
            writes = report.writes,
            "services programmed"
        );
        self.health = Some(if report.errors.is_empty() {
            Health::Ok
        } else {
            for e in &report.errors {
                warn!(plugin = NAME, error = %e, "programming a service; retrying on the next change");
            }
            Health::Degraded(report.errors.join("; "))
        });
    }
}

/// The programmed frontends with their backends, as `porin service list` shows them.
fn services_json(served: &DesiredServices) -> Vec<serde_json::Value> {
    served
        .iter()
        .map(|(frontend, backends)| {
            serde_json::json!({
                "frontend": frontend.addr.to_string(),
                "protocol": match frontend.proto {
                    6 => "TCP",
                    17 => "UDP",
                    _ => "other",
                },
                "type": if frontend.addr.ip().is_unspecified() { "NodePort" } else { "ClusterIP" },
                "backends": backends.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
        })
        .collect()
}

impl Plugin for LbPlugin {
    fn status_json(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({ "services": services_json(&self.served) }))
    }

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
                    value: u32::from(self.config.kube_proxy_replacement),
                },
                Switch {
                    name: "CFG_ENABLE_SOCKET_LB",
                    value: u32::from(self.config.socket_lb),
                },
                Switch {
                    name: "CFG_LB_MAGLEV",
                    value: u32::from(self.config.algorithm == crate::Algorithm::Maglev),
                },
                Switch {
                    name: "CFG_ENABLE_NODEPORT",
                    value: u32::from(self.nodeport_on()),
                },
            ],
            maps: vec![],
            devices: if !self.nodeport_on() {
                vec![]
            } else if self.config.devices.is_empty() {
                vec![DEFAULT_DEVICE.to_string()]
            } else {
                self.config.devices.clone()
            },
        }
    }

    fn start(&mut self, ctx: Arc<dyn PluginContext>) -> Result<(), PluginError> {
        if !self.config.kube_proxy_replacement {
            info!(
                plugin = NAME,
                "kube_proxy_replacement = false: services are not served"
            );
            self.health = Some(Health::Ok);
            return Ok(());
        }
        let maps = LbMaps::open(|name| ctx.map_pin_path(name)).map_err(|e| PluginError::Start {
            plugin: NAME.to_string(),
            message: format!("opening the LB maps: {e}"),
        })?;
        // Adopt what a previous agent programmed, so ids stay stable across restarts.
        let programmer = match (maps.services(), maps.slots(), maps.backends()) {
            (Ok(services), Ok(slots), Ok(backends)) => Programmer::adopt(services, slots, backends),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                warn!(plugin = NAME, error = %e, "reading the LB maps; reprogramming from scratch");
                Programmer::default()
            }
        };
        self.running = Some(Running {
            ctx,
            maps,
            programmer,
        });
        self.program();
        info!(plugin = NAME, "started");
        Ok(())
    }

    fn reconcile(&mut self, change: &StateChangeSummary) -> Result<(), PluginError> {
        if change.kinds.is_empty() || WATCHED_KINDS.iter().any(|k| change.touches(k)) {
            self.program();
        }
        Ok(())
    }

    fn stop(&mut self) -> Result<(), PluginError> {
        // The maps stay pinned and programmed: services keep working while no agent runs.
        self.running = None;
        info!(plugin = NAME, "stopped");
        self.health = Some(Health::Stopped);
        Ok(())
    }

    fn health(&self) -> Health {
        self.health.clone().unwrap_or(Health::Starting)
    }
}
