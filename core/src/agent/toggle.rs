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
        // IPv6 NodePort (dual stack): the node's IPv6 address as four words.
        if let Some(ip) = config.node_ip_v6.filter(|_| config.enable_ipv6) {
            switches.extend(crate::datapath::node_ipv6_switches(ip));
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
    /// Pod programs of recent shapes, verified and ready to swap back in: turning a
    /// plugin on again after turning it off costs link updates only, no verification.
    pub pod_cache: Vec<(Vec<(String, u32)>, Datapath)>,
    /// The same for the node device program.
    pub host_cache: Vec<(Vec<(String, u32)>, HostDatapath)>,
}

/// Program sets kept in each cache of [`DatapathExtras`].
const CACHE_SIZE: usize = 4;

/// The key of a node device program in the cache: its switches and devices.
fn host_key(shape: &DatapathShape) -> Vec<(String, u32)> {
    let mut key = shape.switches.clone();
    key.extend(shape.devices.iter().map(|d| (format!("device {d}"), 0)));
    key
}

/// Takes the program set loaded for `switches` out of `cache`.
fn take<T>(cache: &mut Vec<(Vec<(String, u32)>, T)>, switches: &[(String, u32)]) -> Option<T> {
    let i = cache.iter().position(|(s, _)| s == switches)?;
    Some(cache.swap_remove(i).1)
}

/// Keeps a program set for `switches`, forgetting the oldest beyond [`CACHE_SIZE`].
fn keep<T>(cache: &mut Vec<(Vec<(String, u32)>, T)>, switches: Vec<(String, u32)>, set: T) {
    cache.retain(|(s, _)| *s != switches);
    cache.push((switches, set));
    if cache.len() > CACHE_SIZE {
        cache.remove(0);
    }
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
        let mut datapath_ms = 0.0;
        let mut reload = || -> Result<bool, AgentError> {
            let at = Instant::now();
            let reloaded = self.apply_datapath_shape()?;
            datapath_ms = at.elapsed().as_secs_f64() * 1000.0;
            Ok(reloaded)
        };
        let (changed, datapath_reloaded) = if enabled {
            // The plugin fills its maps first, then the programs switch its feature on.
            let section = lock(&self.plugin_sections).get(name).cloned();
            let changed = lock(&self.plugins)
                .enable(name, section.as_ref(), ctx)
                .map_err(toggle_error)?;
            (changed, changed && reload()?)
        } else {
            // The programs drop the feature first, then the plugin stops and clears up.
            let was_on = lock(&self.plugins)
                .mark_disabled(name)
                .map_err(toggle_error)?;
            let reloaded = was_on && reload()?;
            let changed = lock(&self.plugins).disable(name).map_err(toggle_error)?;
            // Its maps no longer describe the datapath: no stale pressure series.
            self.forget_map_pressure_of(name);
            (changed, reloaded)
        };
        let report = PluginToggle {
            plugin: name.to_string(),
            enabled,
            changed,
            datapath_reloaded,
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
            datapath_ms,
        };
        info!(
            plugin = name,
            enabled,
            changed,
            datapath_reloaded,
            elapsed_ms = report.elapsed_ms,
            datapath_ms,
            "plugin toggled"
        );
        Ok(report)
    }

    /// Reloads the programs when the enabled plugins want other switches, devices or
    /// socket load balancing. Returns whether anything was reloaded.
    ///
    /// The pod programs and the node device program are loaded (verified) at the same
    /// time, without holding the agent's locks; the locks are taken only to swap the new
    /// pod programs into the endpoints' links.
    pub(crate) fn apply_datapath_shape(&self) -> Result<bool, AgentError> {
        let wanted = DatapathShape::of(&lock(&self.plugins), &self.config);
        let mut extras = lock(&self.datapath_extras);
        if extras.shape == wanted {
            return Ok(false);
        }
        let switches_changed = extras.shape.switches != wanted.switches;
        let host_changed = switches_changed || extras.shape.devices != wanted.devices;
        let node_dir = lock(&self.datapath).node_pin_dir().to_path_buf();
        let devices_changed = extras.shape.devices != wanted.devices;
        if host_changed
            && let Some(old) = extras.host.take()
            && !devices_changed
        {
            // Its links are pinned: the new program replaces it in them. Kept for later,
            // only while the devices are the same: the links it holds stay attached.
            // (With other devices it is dropped here, and with it the links of devices
            // no longer wanted.)
            let key = host_key(&extras.shape);
            keep(&mut extras.host_cache, key, old);
        }
        if devices_changed {
            // Cached programs hold links of the old devices.
            extras.host_cache.clear();
        }
        let cached_host = if host_changed {
            take(&mut extras.host_cache, &host_key(&wanted))
        } else {
            None
        };
        let cached = if switches_changed {
            take(&mut extras.pod_cache, &wanted.switches)
        } else {
            None
        };
        let load_pod = switches_changed && cached.is_none();
        let (pod, host) = std::thread::scope(|s| {
            let pod = s.spawn(|| {
                load_pod
                    .then(|| {
                        Datapath::load(&DatapathConfig {
                            node_name: self.config.node_name.clone(),
                            pin_root: self.config.pin_root.clone(),
                            switches: wanted.switches.clone(),
                        })
                    })
                    .transpose()
            });
            let host = host_changed.then(|| {
                super::devices::attach_host_devices_with(
                    &node_dir,
                    &wanted.switches,
                    &wanted.devices,
                    self.config.node_ip,
                    cached_host,
                )
            });
            (pod.join(), host)
        });
        let pod = pod.map_err(|_| AgentError::Toggle {
            plugin: "datapath".to_string(),
            message: "loading the programs panicked".to_string(),
        })?;
        if let Some(mut fresh) = pod?.or(cached) {
            let endpoints = lock(&self.endpoints);
            // A cached set may hold links of endpoints deleted since.
            let current: std::collections::BTreeSet<&str> =
                endpoints.iter().map(|r| r.host_ifname.as_str()).collect();
            fresh
                .links
                .retain(|ifname, _| current.contains(ifname.as_str()));
            for record in endpoints.iter() {
                if let Err(e) = fresh.attach_endpoint(&record.host_ifname) {
                    error!(endpoint = %record.host_ifname, error = %e, "swapping the new programs in");
                }
            }
            let old = std::mem::replace(&mut *lock(&self.datapath), fresh);
            let old_switches = extras.shape.switches.clone();
            keep(&mut extras.pod_cache, old_switches, old);
        }
        if let Some(host) = host {
            extras.host = host?;
        }
        if extras.shape.socket_lb != wanted.socket_lb {
            extras.socket_lb = None;
            extras.socket_lb =
                super::run::socket_lb(&self.config, &node_dir, wanted.socket_lb, &wanted.switches)?;
        }
        extras.shape = wanted;
        Ok(true)
    }
}
