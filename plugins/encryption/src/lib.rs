//! porin-encryption: WireGuard between nodes.
//!
//! Each node keeps an X25519 key pair in its state directory and publishes the public
//! key and its endpoint as Node annotations; every node runs a userspace WireGuard
//! device (Porin's own, `porin wireguard`, or wireguard-go) with one peer per other node
//! that published a key, and routes that node's pod CIDR through the device. See
//! docs/encryption.md.

mod command;
mod config;
mod device;
mod dump;
mod error;
mod kernel;
mod keys;
mod metrics;
mod peers;
mod plugin;
mod supervisor;
mod tunnel_map;
mod userspace;

pub use config::{EncryptionConfig, EncryptionType, Userspace};
pub use device::name_for_inode as wireguard_device_name;
pub use dump::{DeviceDump, PeerDump};
pub use error::WgError;
pub use peers::{ENDPOINT_ANNOTATION, PUB_KEY_ANNOTATION};
pub use plugin::EncryptionPlugin;
