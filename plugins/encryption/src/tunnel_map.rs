//! The datapath's view of the tunnel: `porin_encrypt` = every other node's pod CIDR -> the
//! WireGuard device's ifindex, and every peer's node address (/32) -> the ifindex with
//! [`NODE_ADDRESS_FLAG`], rewritten whenever nodes change or the device is remade.
//! The datapath (`bpf/lib/encrypt.h`) marks flows that crossed the device as encrypted
//! (Hubble's `IP.encrypted`) and, in strict mode, drops pod traffic to another node's pods
//! that would not leave through it (drop reason 195 `UNENCRYPTED_TRAFFIC`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use porin_core::datapath::EncryptMap;

use crate::error::WgError;

/// In a value: the key is a peer's node address, not a pod CIDR (`PORIN_ENCRYPT_F_NODE` in
/// `bpf/lib/encrypt.h`): a local pod's reply to it goes into the device (NodePort SNAT by
/// that peer), and strict mode does not guard it.
pub const NODE_ADDRESS_FLAG: u32 = 0x8000_0000;

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
    pub fn sync(
        &mut self,
        remote: &[Ipv4Net],
        node_addresses: &[Ipv4Addr],
        device: &str,
    ) -> Result<(), WgError> {
        let wanted = wanted(remote, node_addresses, device_ifindex(device));
        self.map
            .sync(&wanted)
            .map_err(|e| WgError::Datapath(e.to_string()))
    }
}

/// The map's wanted content.
pub fn wanted(
    remote: &[Ipv4Net],
    node_addresses: &[Ipv4Addr],
    ifindex: u32,
) -> BTreeMap<Ipv4Net, u32> {
    let mut out: BTreeMap<Ipv4Net, u32> = node_addresses
        .iter()
        .map(|a| (Ipv4Net::from(*a), ifindex | NODE_ADDRESS_FLAG))
        .collect();
    // A pod CIDR wins over a node address inside it (not expected).
    out.extend(remote.iter().map(|c| (c.trunc(), ifindex)));
    out
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
        let nodes: Vec<Ipv4Addr> = vec!["192.168.200.2".parse().expect("ip")];
        let w = wanted(&remote, &nodes, 7);
        assert_eq!(w.len(), 3);
        assert_eq!(w.get(&"10.200.3.0/24".parse().expect("cidr")), Some(&7));
        assert_eq!(w.get(&"10.200.2.0/24".parse().expect("cidr")), Some(&7));
        assert_eq!(
            w.get(&"192.168.200.2/32".parse().expect("node")),
            Some(&(7 | NODE_ADDRESS_FLAG)),
            "node addresses carry the flag"
        );
        assert_eq!(device_ifindex("no-such-dev-xyz"), 0);
        assert_ne!(device_ifindex("lo"), 0);
    }
}
