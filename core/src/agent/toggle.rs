//! Plugins on and off at runtime (`porin plugins enable|disable`, config reload), and
//! the datapath shape that follows from the enabled plugins.
//!
//! Features inside the C programs are load-time switches (`volatile const`), so a plugin
//! whose contribution changes the switches makes the agent load the programs again with
//! the new values and swap them into the endpoints' pinned tcx links with
//! `bpf_link_update` (atomic: every packet sees the old or the new program). Maps are
//! pinned and reused, so conntrack entries, and with them established connections of
//! every feature, carry over.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use tracing::{error, info};

use super::error::AgentError;
use super::run::{Agent, lock};
use crate::api::PluginToggle;
use crate::config::AgentConfig;
use crate::datapath::{Datapath, DatapathConfig, HostDatapath, SocketLb};
use crate::plugins::PluginManager;

/// Load-time switches whose defaults core sets: flow events cost ring-buffer
/// writes, so they are on only when a plugin (observe) asks for them.
const CORE_SWITCH_DEFAULTS: &[(&str, u32)] = &[("CFG_EMIT_EVENTS", 0)];

/// What the datapath must look like for the enabled plugins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DatapathShape {
    pub switches: Vec<(String, u32)>,
    pub devices: Vec<String>,
    pub socket_lb: bool,
}

impl DatapathShape {
    pub fn of(manager: &PluginManager, config: &AgentConfig) -> Self {
        // Switches core owns default to off; enabled plugins turn theirs on.
        let mut switches: BTreeMap<String, u32> = CORE_SWITCH_DEFAULTS
            .iter()
            .map(|(n, v)| ((*n).to_string(), *v))
            .collect();
        for s in manager.switches() {
            switches.insert(s.name.to_string(), s.value);
        }
        // Wildcard NodePort frontends answer on the node IP (network byte order in memory).
        if let Some(IpAddr::V4(ip)) = config.node_ip {
            switches.insert("CFG_NODE_IPV4".to_string(), u32::from_ne_bytes(ip.octets()));
        }
        let on = |name: &str| switches.get(name).is_some_and(|v| *v != 0);
        let socket_lb = on("CFG_ENABLE_LB") && on("CFG_ENABLE_SOCKET_LB");
        Self {
            switches: switches.into_iter().collect(),
            devices: manager.devices(),
            socket_lb,
        }
    }
}

/// The node-level attachments besides the pod programs, and the shape they follow.
pub(crate) struct DatapathExtras {
    pub shape: DatapathShape,
    pub host: Option<HostDatapath>,
    pub socket_lb: Option<SocketLb>,
}

impl Agent {
    /// Turns plugin `name` on or off and applies its datapath contribution.
    pub(crate) fn set_plugin_enabled(
        &self,
        name: &str,
        enabled: bool,
    ) -> Result<PluginToggle, AgentError> {
        let started = Instant::now();
        let toggle_error = |message: String| AgentError::Toggle {
            plugin: name.to_string(),
            message,
        };
        let ctx = self
            .plugin_ctx
            .get()
            .ok_or_else(|| toggle_error("the agent is still starting".to_string()))?;
        let (changed, datapath_reloaded) = if enabled {
            // The plugin fills its maps first, then the programs switch its feature on.
            let section = lock(&self.plugin_sections).get(name).cloned();
            let changed = lock(&self.plugins)
                .enable(name, section.as_ref(), ctx)
                .map_err(toggle_error)?;
            (changed, changed && self.apply_datapath_shape()?)
        } else {
            // The programs drop the feature first, then the plugin stops and clears up.
            let was_on = lock(&self.plugins)
                .mark_disabled(name)
                .map_err(toggle_error)?;
            let reloaded = was_on && self.apply_datapath_shape()?;
            let changed = lock(&self.plugins).disable(name).map_err(toggle_error)?;
            (changed, reloaded)
        };
        let report = PluginToggle {
            plugin: name.to_string(),
            enabled,
            changed,
            datapath_reloaded,
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        info!(
            plugin = name,
            enabled,
            changed,
            datapath_reloaded,
            elapsed_ms = report.elapsed_ms,
            "plugin toggled"
        );
        Ok(report)
    }

    /// Reloads the programs when the enabled plugins want other switches, devices or
    /// socket load balancing. Returns whether anything was reloaded.
    pub(crate) fn apply_datapath_shape(&self) -> Result<bool, AgentError> {
        let wanted = DatapathShape::of(&lock(&self.plugins), &self.config);
        let mut extras = lock(&self.datapath_extras);
        if extras.shape == wanted {
            return Ok(false);
        }
        let endpoints = lock(&self.endpoints);
        let mut datapath = lock(&self.datapath);
        if extras.shape.switches != wanted.switches {
            let mut fresh = Datapath::load(&DatapathConfig {
                node_name: self.config.node_name.clone(),
                pin_root: self.config.pin_root.clone(),
                switches: wanted.switches.clone(),
            })?;
            for record in endpoints.iter() {
                if let Err(e) = fresh.attach_endpoint(&record.host_ifname) {
                    error!(endpoint = %record.host_ifname, error = %e, "swapping the new programs in");
                }
            }
            *datapath = fresh;
        }
        let node_dir = datapath.node_pin_dir().to_path_buf();
        drop(datapath);
        drop(endpoints);
        if extras.shape.switches != wanted.switches || extras.shape.devices != wanted.devices {
            // Dropping the old one first: its links are pinned, the new load replaces them.
            extras.host = None;
            extras.host = super::devices::attach_host_devices(
                &node_dir,
                &wanted.switches,
                &wanted.devices,
                self.config.node_ip,
            )?;
        }
        if extras.shape.socket_lb != wanted.socket_lb {
            extras.socket_lb = None;
            extras.socket_lb = super::run::socket_lb(&self.config, &node_dir, wanted.socket_lb)?;
        }
        extras.shape = wanted;
        Ok(true)
    }
}
