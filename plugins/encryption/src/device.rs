//! The userspace WireGuard device: Porin's own (`porin wireguard`) or `wireguard-go` on a
//! TUN device in the agent's network namespace, configured with `wg set` and `ip`.
//!
//! Userspace implementations keep their control socket in `/var/run/wireguard/<dev>.sock`,
//! shared by every network namespace, so the device name must be unique across nodes on
//! one machine: it is derived from the network namespace's inode (`pwg` + hex), which
//! is also stable across agent restarts, so a restarted agent finds and reuses its device.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use tracing::{info, warn};

use crate::command::run;
use crate::config::Userspace;
use crate::dump::{self, DeviceDump};
use crate::error::WgError;
use crate::peers::{self, Peer};
use crate::userspace;

/// The device's name in this network namespace (at most 15 bytes: IFNAMSIZ).
pub fn device_name() -> String {
    let inode = std::fs::read_link("/proc/self/ns/net")
        .ok()
        .and_then(|p| {
            let text = p.to_string_lossy().into_owned();
            text.trim_start_matches("net:[")
                .trim_end_matches(']')
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    name_for_inode(inode)
}

/// The WireGuard device name of the network namespace with this inode.
pub fn name_for_inode(inode: u64) -> String {
    let mut hex = format!("{inode:x}");
    // "pwg" + 12 hex digits = 15 bytes.
    if hex.len() > 12 {
        hex = hex.split_off(hex.len() - 12);
    }
    format!("pwg{hex}")
}

/// What the device should look like.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub name: String,
    /// The implementation started when no device runs.
    pub userspace: Userspace,
    pub private_key_path: PathBuf,
    pub listen_port: u16,
    pub mtu: u32,
    /// This node's address on the device (its pod CIDR's router address), so traffic the
    /// node itself sends through the tunnel has a source the peers accept.
    pub address: Option<Ipv4Addr>,
}

/// The running device and what was applied to it.
pub struct Device {
    spec: DeviceSpec,
    /// `None` when a previous agent's device process was adopted.
    child: Option<Child>,
    applied: Vec<Peer>,
    routes: BTreeSet<Ipv4Net>,
    /// How often the device process was (re)started by this agent.
    pub restarts: u64,
}

impl Device {
    pub fn new(spec: DeviceSpec) -> Self {
        Self {
            spec,
            child: None,
            applied: Vec::new(),
            routes: BTreeSet::new(),
            restarts: 0,
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Make sure the device process runs and the device is configured; (re)start it
    /// when it died. A device left by a previous agent is adopted. Returns true when the device
    /// was (re)made, so every peer and route must be applied again.
    pub fn ensure(&mut self) -> Result<bool, WgError> {
        let child_died = match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => {
                warn!(device = %self.spec.name, %status, userspace = self.spec.userspace.as_str(), "the WireGuard device process exited; restarting it");
                true
            }
            _ => false,
        };
        if !child_died && self.responds() {
            return Ok(false);
        }
        self.kill_child();
        // A half-dead device (socket gone, link left) would block the new one.
        let _ = run("ip", &["link", "del", &self.spec.name], None);
        let mut command = userspace::command(self.spec.userspace, &self.spec.name)?;
        let child = command.spawn().map_err(|e| WgError::Command {
            command: format!("{command:?}"),
            message: e.to_string(),
        })?;
        self.child = Some(child);
        self.restarts += 1;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.responds() {
            if Instant::now() > deadline {
                return Err(WgError::DeviceDown {
                    device: self.spec.name.clone(),
                    message: "no answer on its control socket within 5s".to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.configure()?;
        self.applied.clear();
        self.routes.clear();
        info!(device = %self.spec.name, port = self.spec.listen_port, userspace = self.spec.userspace.as_str(), "WireGuard device up");
        Ok(true)
    }

    /// Adopt a device a previous agent left running, if there is one.
    pub fn adopt(&mut self) -> Result<bool, WgError> {
        if !self.responds() {
            return Ok(false);
        }
        info!(device = %self.spec.name, "reusing the running WireGuard device");
        self.configure()?;
        // Unknown peers on the adopted device are removed by the next apply.
        self.applied = self.current_peers();
        Ok(true)
    }

    fn configure(&self) -> Result<(), WgError> {
        let name = self.spec.name.as_str();
        let key = self.spec.private_key_path.to_string_lossy();
        let port = self.spec.listen_port.to_string();
        run(
            "wg",
            &["set", name, "private-key", &key, "listen-port", &port],
            None,
        )?;
        run(
            "ip",
            &["link", "set", name, "mtu", &self.spec.mtu.to_string(), "up"],
            None,
        )?;
        if let Some(address) = self.spec.address {
            run(
                "ip",
                &["addr", "replace", &format!("{address}/32"), "dev", name],
                None,
            )?;
        }
        Ok(())
    }

    /// Bring peers and routes to `wanted`: gone or rotated peers removed, new ones set,
    /// each peer's pod CIDR routed through the device.
    pub fn apply(&mut self, wanted: &[Peer]) -> Result<(), WgError> {
        let name = self.spec.name.clone();
        let (removed, set) = peers::diff(&self.applied, wanted);
        for peer in removed {
            run(
                "wg",
                &["set", &name, "peer", &peer.public_key, "remove"],
                None,
            )?;
            info!(node = %peer.node, "WireGuard peer removed");
        }
        for peer in set {
            run(
                "wg",
                &[
                    "set",
                    &name,
                    "peer",
                    &peer.public_key,
                    "endpoint",
                    &peer.endpoint.to_string(),
                    "allowed-ips",
                    &peer.pod_cidr.to_string(),
                ],
                None,
            )?;
            info!(node = %peer.node, endpoint = %peer.endpoint, pod_cidr = %peer.pod_cidr, "WireGuard peer set");
        }
        self.applied = wanted.to_vec();
        let wanted_routes: BTreeSet<Ipv4Net> = wanted.iter().map(|p| p.pod_cidr).collect();
        for cidr in self.routes.difference(&wanted_routes) {
            let _ = run(
                "ip",
                &["route", "del", &cidr.to_string(), "dev", &name],
                None,
            );
        }
        for cidr in wanted_routes.difference(&self.routes) {
            run(
                "ip",
                &["route", "replace", &cidr.to_string(), "dev", &name],
                None,
            )?;
        }
        self.routes = wanted_routes;
        Ok(())
    }

    /// The device as `wg show <dev> dump` reports it.
    pub fn dump(&self) -> Result<DeviceDump, WgError> {
        let text = run("wg", &["show", &self.spec.name, "dump"], None)?;
        dump::parse(&text).ok_or_else(|| WgError::Command {
            command: format!("wg show {} dump", self.spec.name),
            message: "unexpected output".to_string(),
        })
    }

    /// Remove the device: routes go with it, the device process exits.
    pub fn remove(&mut self) {
        let _ = run("ip", &["link", "del", &self.spec.name], None);
        self.kill_child();
        self.applied.clear();
        self.routes.clear();
    }

    fn responds(&self) -> bool {
        run("wg", &["show", &self.spec.name, "public-key"], None).is_ok()
    }

    fn current_peers(&self) -> Vec<Peer> {
        // Only keys matter for removal; adopted peers carry no node name.
        self.dump()
            .map(|d| {
                d.peers
                    .into_iter()
                    .filter_map(|p| {
                        Some(Peer {
                            node: String::new(),
                            public_key: p.public_key,
                            endpoint: p.endpoint?.parse().ok()?,
                            pod_cidr: p.allowed_ips.first()?.parse().ok()?,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn kill_child(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_ifnamsiz_and_differ_per_namespace() {
        let a = name_for_inode(4_026_532_281);
        let b = name_for_inode(4_026_532_282);
        assert_ne!(a, b);
        assert!(a.len() <= 15, "{a}");
        assert!(name_for_inode(u64::MAX).len() <= 15);
        assert!(device_name().starts_with("pwg"));
    }
}
