//! porin-encryption: WireGuard between nodes.

mod config;
mod plugin;

pub use config::{EncryptionConfig, EncryptionType};
pub use plugin::EncryptionPlugin;
