//! The datapath's view of the tunnel: `porin_encrypt` = every other node's pod CIDR -> the
//! WireGuard device's ifindex, rewritten whenever nodes change or the device is remade.
//! The datapath (`bpf/lib/encrypt.h`) marks flows that crossed the device as encrypted
//! (Hubble's `IP.encrypted`) and, in strict mode, drops pod traffic to another node's pods
//! that would not leave through it (drop reason 195 `UNENCRYPTED_TRAFFIC`).

use std::collections::BTreeMap;
use std::path::Path;

use ipnet::Ipv4Net;
use porin_core::datapath::EncryptMap;

use crate::error::WgError;

/// The tunnel map.
pub struct TunnelMap {
    map: EncryptMap,
}

impl TunnelMap {
    /// Opens the pinned `porin_encrypt`.
    pub fn open(pin: &Path) -> Result<Self, WgError> {
        let map = EncryptMap::open(pin).map_err(|e| WgError::Datapath(e.to_string()))?;
        Ok(Self { map })
    }

    /// Every CIDR in `remote` must leave through `device` (its ifindex in this namespace;
    /// 0 when it does not exist, so everything to those CIDRs is dropped).
    pub fn sync(&mut self, remote: &[Ipv4Net], device: &str) -> Result<(), WgError> {
        let wanted = wanted(remote, device_ifindex(device));
        self.map
            .sync(&wanted)
            .map_err(|e| WgError::Datapath(e.to_string()))
    }
}

/// The map's wanted content.
pub fn wanted(remote: &[Ipv4Net], ifindex: u32) -> BTreeMap<Ipv4Net, u32> {
    remote.iter().map(|c| (c.trunc(), ifindex)).collect()
}

/// The ifindex of `device` in the agent's namespace, 0 when it does not exist.
pub fn device_ifindex(device: &str) -> u32 {
    nix::net::if_::if_nametoindex(device).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_remote_cidr_maps_to_the_device() {
        let remote: Vec<Ipv4Net> = ["10.200.2.0/24", "10.200.3.9/24"]
            .iter()
            .map(|c| c.parse().expect("cidr"))
            .collect();
        let w = wanted(&remote, 7);
        assert_eq!(w.len(), 2);
        assert!(w.values().all(|i| *i == 7));
        assert!(w.contains_key(&"10.200.3.0/24".parse().expect("cidr")));
        assert_eq!(device_ifindex("no-such-dev-xyz"), 0);
        assert_ne!(device_ifindex("lo"), 0);
    }
}
