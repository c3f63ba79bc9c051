//! Typed handle on the encryption tunnel map (`bpf/lib/maps.h`, `porin_encrypt`), for
//! the encryption plugin: every other node's pod CIDR -> the ifindex of the WireGuard
//! device its pods' traffic must leave through (`bpf/lib/encrypt.h`). Opened from the pin.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{MapData, MapError};
use ipnet::Ipv4Net;

use super::error::DatapathError;
use super::maps::open_pinned;

/// Remote pod CIDR -> WireGuard device ifindex (0: device down, drop everything).
pub const MAP_ENCRYPT: &str = "porin_encrypt";

/// Read and write access to `porin_encrypt`. The key data is the IPv4 address in network
/// byte order (`struct porin_encrypt_key` minus its leading prefix length).
pub struct EncryptMap {
    map: LpmTrie<MapData, u32, u32>,
}

fn key(cidr: Ipv4Net) -> Key<u32> {
    let cidr = cidr.trunc();
    Key::new(
        u32::from(cidr.prefix_len()),
        u32::from_ne_bytes(cidr.network().octets()),
    )
}

impl EncryptMap {
    /// Opens the pinned map.
    pub fn open(path: &Path) -> Result<Self, DatapathError> {
        let map = LpmTrie::try_from(open_pinned(path)?)
            .map_err(|e| DatapathError::map(MAP_ENCRYPT, e))?;
        Ok(Self { map })
    }

    /// Every entry: CIDR -> tunnel ifindex.
    pub fn entries(&self) -> Result<BTreeMap<Ipv4Net, u32>, DatapathError> {
        let mut out = BTreeMap::new();
        for entry in self.map.iter() {
            let (k, ifindex) = entry.map_err(|e| DatapathError::map(MAP_ENCRYPT, e))?;
            let addr = Ipv4Addr::from(k.data().to_ne_bytes());
            let len = u8::try_from(k.prefix_len()).unwrap_or(32).min(32);
            if let Ok(cidr) = Ipv4Net::new(addr, len) {
                out.insert(cidr, ifindex);
            }
        }
        Ok(out)
    }

    /// Creates or replaces the entry of `cidr`.
    pub fn set(&mut self, cidr: Ipv4Net, tunnel_ifindex: u32) -> Result<(), DatapathError> {
        self.map
            .insert(&key(cidr), tunnel_ifindex, 0)
            .map_err(|e| DatapathError::map(MAP_ENCRYPT, e))
    }

    /// Removes the entry of `cidr` (absent is fine).
    pub fn remove(&mut self, cidr: Ipv4Net) -> Result<(), DatapathError> {
        match self.map.remove(&key(cidr)) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(DatapathError::map(MAP_ENCRYPT, e)),
        }
    }

    /// Makes the map exactly `wanted`, writing only differences.
    pub fn sync(&mut self, wanted: &BTreeMap<Ipv4Net, u32>) -> Result<(), DatapathError> {
        let current = self.entries()?;
        for cidr in current.keys().filter(|c| !wanted.contains_key(c)) {
            self.remove(*cidr)?;
        }
        for (cidr, ifindex) in wanted {
            if current.get(cidr) != Some(ifindex) {
                self.set(*cidr, *ifindex)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_network_order_and_truncated() {
        let k = key("10.200.1.7/24".parse().expect("cidr"));
        assert_eq!(k.prefix_len(), 24);
        assert_eq!(k.data().to_ne_bytes(), [10, 200, 1, 0]);
    }
}
