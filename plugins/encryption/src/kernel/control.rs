//! The kernel device: created with `ip link add NAME type wireguard`, configured and read
//! through generic netlink.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::genl::Genl;
use super::messages::{KernelPeer, dump_of, get_device, set_device, set_peers};
use crate::command::run;
use crate::dump::DeviceDump;
use crate::error::WgError;
use crate::peers::Peer;

/// A kernel WireGuard device's control channel.
pub struct KernelControl {
    genl: Genl,
}

impl KernelControl {
    /// The kernel path for device `name`, if the kernel has WireGuard: an existing kernel
    /// device is adopted, else one is created (`ip link add NAME type wireguard`). `None`
    /// when the kernel has no WireGuard, or `name` is a userspace device already (its TUN
    /// link answers no WireGuard netlink request).
    pub fn take(name: &str) -> Option<Self> {
        let mut genl = Genl::open().ok()?;
        if nix::net::if_::if_nametoindex(name).is_ok() {
            genl.request(get_device(name)).ok()?;
            return Some(Self { genl });
        }
        run("ip", &["link", "add", name, "type", "wireguard"], None).ok()?;
        Some(Self { genl })
    }

    /// Whether the link exists (a kernel device has no process to die; it can be deleted).
    pub fn exists(name: &str) -> bool {
        nix::net::if_::if_nametoindex(name).is_ok()
    }

    /// Recreate a deleted device.
    pub fn create(name: &str) -> Result<(), WgError> {
        run("ip", &["link", "add", name, "type", "wireguard"], None).map(|_| ())
    }

    /// Private key (from the key file, never on a command line) and listen port.
    pub fn configure(&mut self, name: &str, key_file: &Path, port: u16) -> Result<(), WgError> {
        let text = std::fs::read_to_string(key_file).map_err(|source| WgError::Io {
            what: "reading",
            path: key_file.to_path_buf(),
            source,
        })?;
        let key = decode_key(text.trim()).map_err(|reason| WgError::BadKey {
            path: key_file.to_path_buf(),
            reason,
        })?;
        self.genl.request(set_device(name, key, port)).map(|_| ())
    }

    /// Remove `removed`, create or update `set`, in one request.
    pub fn apply(&mut self, name: &str, removed: &[&Peer], set: &[&Peer]) -> Result<(), WgError> {
        let bad = |peer: &Peer, reason: String| WgError::Netlink {
            what: format!("peer {}", peer.node),
            message: reason,
        };
        let remove = removed
            .iter()
            .map(|p| decode_key(&p.public_key).map_err(|r| bad(p, r)))
            .collect::<Result<Vec<_>, _>>()?;
        let set = set
            .iter()
            .map(|p| {
                Ok(KernelPeer {
                    public_key: decode_key(&p.public_key).map_err(|r| bad(p, r))?,
                    endpoint: p.endpoint,
                    allowed_ips: p.allowed_ips(),
                })
            })
            .collect::<Result<Vec<_>, WgError>>()?;
        if remove.is_empty() && set.is_empty() {
            return Ok(());
        }
        self.genl
            .request(set_peers(name, &remove, &set))
            .map(|_| ())
    }

    /// The device as `wg show dump` would show it.
    pub fn dump(&mut self, name: &str) -> Result<DeviceDump, WgError> {
        let replies = self.genl.request(get_device(name))?;
        dump_of(&replies).ok_or_else(|| WgError::Netlink {
            what: "GetDevice".to_string(),
            message: format!("no device attributes for {name}"),
        })
    }
}

/// A WireGuard key: 32 bytes in base64.
fn decode_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = STANDARD
        .decode(text)
        .map_err(|e| format!("not base64: {e}"))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| format!("{} bytes, not 32", bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_decode_or_say_why_not() {
        let key = STANDARD.encode([7u8; 32]);
        assert_eq!(decode_key(&key), Ok([7u8; 32]));
        assert!(decode_key("short").is_err());
        assert!(
            decode_key(&STANDARD.encode([1u8; 16]))
                .expect_err("16")
                .contains("16 bytes")
        );
    }

    #[test]
    fn this_kernel_without_wireguard_falls_back_to_userspace() {
        // The kernel these tests run on has no WireGuard module; where it has one, a
        // kernel device would be made (and is removed here).
        let name = format!("pwgk{}", std::process::id() % 100_000);
        match KernelControl::take(&name) {
            None => assert!(!KernelControl::exists(&name), "{name} left behind"),
            Some(_) => {
                let _ = run("ip", &["link", "del", &name], None);
            }
        }
    }
}
