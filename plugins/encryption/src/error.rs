//! What can go wrong in the WireGuard tunnel.

use std::path::PathBuf;

use thiserror::Error;

/// A failure of the encryption plugin's runtime work.
#[derive(Debug, Error)]
pub enum WgError {
    /// A file of the key store could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A command (`wg`, `ip`, `wireguard-go`) could not be run or failed.
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    /// A key is not 32 bytes of base64 (44 characters).
    #[error("invalid WireGuard key in {path}: {reason}")]
    BadKey { path: PathBuf, reason: String },
    /// The tunnel map (`porin_encrypt`) could not be opened or written.
    #[error("tunnel map porin_encrypt: {0}")]
    Datapath(String),
    /// A generic netlink exchange with the kernel's WireGuard failed.
    #[error("kernel WireGuard netlink {what}: {message}")]
    Netlink { what: String, message: String },
    /// The userspace device did not come up in time.
    #[error("device {device} did not come up: {message}")]
    DeviceDown { device: String, message: String },
}
