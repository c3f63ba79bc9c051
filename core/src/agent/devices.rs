//! The node device program (`bpf/host.c`): which devices get it, attached at agent start.

use std::net::IpAddr;
use std::path::Path;

use porin_plugin_sdk::{DEFAULT_DEVICE, TUNNEL_DEVICE_PREFIX};
use tracing::{info, warn};

use super::error::AgentError;
use crate::datapath::HostDatapath;

/// Attaches the node device program to `wanted` (plugin contributions; [`DEFAULT_DEVICE`]
/// stands for the interface holding `node_ip`), and removes the pinned links of devices no
/// longer wanted. Returns `None` when no device wants it.
pub(crate) fn attach_host_devices(
    node_dir: &Path,
    switches: &[(String, u32)],
    wanted: &[String],
    node_ip: Option<IpAddr>,
) -> Result<Option<HostDatapath>, AgentError> {
    attach_host_devices_with(node_dir, switches, wanted, node_ip, None)
}

/// Like [`attach_host_devices`], with a program already loaded for `switches` (kept by a
/// runtime toggle), so nothing is verified again.
pub(crate) fn attach_host_devices_with(
    node_dir: &Path,
    switches: &[(String, u32)],
    wanted: &[String],
    node_ip: Option<IpAddr>,
    preloaded: Option<HostDatapath>,
) -> Result<Option<HostDatapath>, AgentError> {
    let mut devices = Vec::new();
    let mut tunnels = Vec::new();
    for device in wanted {
        if let Some(tunnel) = device.strip_prefix(TUNNEL_DEVICE_PREFIX) {
            tunnels.push(tunnel.to_string());
            continue;
        }
        if device != DEFAULT_DEVICE {
            devices.push(device.clone());
            continue;
        }
        match node_ip.and_then(interface_of) {
            Some(name) => devices.push(name),
            None => warn!(
                ?node_ip,
                "no interface holds the node IP: NodePort is not served (set [plugins.lb] devices)"
            ),
        }
    }
    devices.sort();
    devices.dedup();
    // Tunnel links only with a device program: without NodePort they have nothing to do.
    let keep: Vec<String> = if devices.is_empty() {
        Vec::new()
    } else {
        devices.iter().chain(&tunnels).cloned().collect()
    };
    HostDatapath::remove_pins(node_dir, &keep)?;
    if devices.is_empty() {
        // Nothing to translate NodePort traffic: the tunnel entry would have nothing to do.
        return Ok(None);
    }
    let mut host = match preloaded {
        Some(host) => host,
        None => HostDatapath::load(node_dir, switches)?,
    };
    for device in &devices {
        let state = host.attach(device)?;
        info!(device, ?state, "node device program attached");
    }
    for tunnel in &tunnels {
        // Made by its plugin once it starts, which then asks for the program itself.
        if nix::net::if_::if_nametoindex(tunnel.as_str()).is_err() {
            info!(device = %tunnel, "tunnel device not there yet");
            continue;
        }
        let state = host.attach_tunnel(tunnel)?;
        info!(device = %tunnel, ?state, "tunnel program attached");
    }
    Ok(Some(host))
}

/// The name of the interface holding `ip`, in the current network namespace.
fn interface_of(ip: IpAddr) -> Option<String> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for a in addrs {
        let Some(addr) = a.address else { continue };
        let found = match ip {
            IpAddr::V4(v4) => addr.as_sockaddr_in().map(|s| s.ip() == v4),
            IpAddr::V6(v6) => addr.as_sockaddr_in6().map(|s| s.ip() == v6),
        };
        if found == Some(true) {
            return Some(a.interface_name);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loopback_address_belongs_to_lo() {
        assert_eq!(
            interface_of(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)).as_deref(),
            Some("lo")
        );
    }
}
