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
use crate::kernel::KernelControl;
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
    /// The key's public half: an adopted device that already has it keeps its sessions.
    pub public_key: String,
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
    /// Set when the kernel has WireGuard: the device is a kernel one, driven by netlink.
    kernel: Option<KernelControl>,
}

impl Device {
    pub fn new(spec: DeviceSpec) -> Self {
        Self {
            spec,
            child: None,
            applied: Vec::new(),
            routes: BTreeSet::new(),
            restarts: 0,
            kernel: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Use kernel WireGuard when this kernel has it (a userspace device already running
    /// under the name is kept). Returns whether the kernel path was taken.
    pub fn prefer_kernel(&mut self) -> bool {
        if self.responds() {
            return false;
        }
        self.kernel = KernelControl::take(&self.spec.name);
        if self.kernel.is_some() {
            info!(device = %self.spec.name, "kernel WireGuard");
        }
        self.kernel.is_some()
    }

    /// `"kernel"`, or the userspace implementation's name.
    pub fn implementation(&self) -> &'static str {
        if self.kernel.is_some() {
            "kernel"
        } else {
            self.spec.userspace.as_str()
        }
    }

    /// Make sure the device process runs and the device is configured; (re)start it
    /// when it died. A device left by a previous agent is adopted. Returns true when the device
    /// was (re)made, so every peer and route must be applied again.
    pub fn ensure(&mut self) -> Result<bool, WgError> {
        if self.kernel.is_some() {
            return self.ensure_kernel();
        }
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

    /// The kernel device has no process: it only needs recreating when it was deleted.
    fn ensure_kernel(&mut self) -> Result<bool, WgError> {
        if KernelControl::exists(&self.spec.name) {
            return Ok(false);
        }
        KernelControl::create(&self.spec.name)?;
        self.restarts += 1;
        self.configure()?;
        self.applied.clear();
        self.routes.clear();
        info!(device = %self.spec.name, port = self.spec.listen_port, "kernel WireGuard device up");
        Ok(true)
    }

    /// Adopt a device a previous agent left running, if there is one.
    pub fn adopt(&mut self) -> Result<bool, WgError> {
        if !self.responds() {
            return Ok(false);
        }
        info!(device = %self.spec.name, "reusing the running WireGuard device");
        // Setting a key resets every session (gotatun does so even for the same key), and
        // rebinding the port a running gotatun listens on fails (EADDRINUSE): only a
        // rotated key or a changed port is written, so traffic goes on.
        let current = self.dump()?;
        let (key, port) = (
            current.public_key != self.spec.public_key,
            current.listen_port != self.spec.listen_port,
        );
        if (key || port) && self.kernel.is_none() {
            // gotatun cannot take a new key or port while running (it rebinds its socket
            // on a port it still holds): a fresh device with the new key instead; the
            // rotation needs new handshakes anyway.
            info!(device = %self.spec.name, "key or port changed: replacing the device");
            self.replace_userspace();
            return Ok(false);
        }
        self.configure_with(key, port)?;
        // Unknown peers on the adopted device are removed by the next apply.
        self.applied = self.current_peers();
        Ok(true)
    }

    /// Delete the link (the device process exits) and wait until its control socket is
    /// gone, so the next device can bind its port and socket.
    fn replace_userspace(&mut self) {
        let _ = run("ip", &["link", "del", &self.spec.name], None);
        let socket = PathBuf::from(format!("/var/run/wireguard/{}.sock", self.spec.name));
        let deadline = Instant::now() + Duration::from_secs(5);
        while socket.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if socket.exists() {
            warn!(socket = %socket.display(), "the old device kept its socket; removing it");
            let _ = std::fs::remove_file(&socket);
        }
    }

    fn configure(&mut self) -> Result<(), WgError> {
        self.configure_with(true, true)
    }

    /// The private key and the listen port (each only when asked), MTU, link up, address.
    fn configure_with(&mut self, key: bool, port: bool) -> Result<(), WgError> {
        let name = self.spec.name.as_str();
        if let Some(kernel) = self.kernel.as_mut() {
            if key || port {
                kernel.configure(name, &self.spec.private_key_path, self.spec.listen_port)?;
            }
        } else {
            let key_path = self.spec.private_key_path.to_string_lossy();
            let port_text = self.spec.listen_port.to_string();
            let mut args = vec!["set", name];
            if key {
                args.extend(["private-key", &key_path]);
            }
            if port {
                args.extend(["listen-port", &port_text]);
            }
            if args.len() > 2 {
                run("wg", &args, None)?;
            }
        }
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
        if let Some(kernel) = self.kernel.as_mut() {
            kernel.apply(&name, &removed, &set)?;
        } else {
            Self::apply_with_wg(&name, &removed, &set)?;
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

    /// Peers through the userspace device's control socket, with `wg set`.
    fn apply_with_wg(name: &str, removed: &[&Peer], set: &[&Peer]) -> Result<(), WgError> {
        for peer in removed {
            run(
                "wg",
                &["set", name, "peer", &peer.public_key, "remove"],
                None,
            )?;
            info!(node = %peer.node, "WireGuard peer removed");
        }
        for peer in set {
            let allowed = peer
                .allowed_ips()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",");
            run(
                "wg",
                &[
                    "set",
                    name,
                    "peer",
                    &peer.public_key,
                    "endpoint",
                    &peer.endpoint.to_string(),
                    "allowed-ips",
                    &allowed,
                ],
                None,
            )?;
            info!(node = %peer.node, endpoint = %peer.endpoint, allowed_ips = %allowed, "WireGuard peer set");
        }
        Ok(())
    }

    /// The device as `wg show <dev> dump` reports it (the kernel's through netlink).
    pub fn dump(&mut self) -> Result<DeviceDump, WgError> {
        if let Some(kernel) = self.kernel.as_mut() {
            return kernel.dump(&self.spec.name);
        }
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
        if self.kernel.is_some() {
            return KernelControl::exists(&self.spec.name);
        }
        run("wg", &["show", &self.spec.name, "public-key"], None).is_ok()
    }

    fn current_peers(&mut self) -> Vec<Peer> {
        // Only keys matter for removal; adopted peers carry no node name.
        self.dump()
            .map(|d| {
                d.peers
                    .into_iter()
                    .filter_map(|p| {
                        let nets: Vec<Ipv4Net> = p
                            .allowed_ips
                            .iter()
                            .filter_map(|a| a.parse().ok())
                            .collect();
                        // The pod CIDR is the one that is not a single address.
                        let pod_cidr = nets
                            .iter()
                            .find(|n| n.prefix_len() < 32)
                            .or_else(|| nets.first())
                            .copied()?;
                        let node_ip = nets
                            .iter()
                            .find(|n| n.prefix_len() == 32 && **n != pod_cidr)
                            .map(Ipv4Net::addr);
                        Some(Peer {
                            node: String::new(),
                            public_key: p.public_key,
                            endpoint: p.endpoint?.parse().ok()?,
                            pod_cidr,
                            node_ip,
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
