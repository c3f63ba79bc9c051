//! What can stop the userspace WireGuard device from starting.

use thiserror::Error;

/// A failure to bring up or run the device.
#[derive(Debug, Error)]
pub enum TunnelError {
    /// The interface name is empty, too long for the kernel (15 bytes) or not a plain name.
    #[error("invalid interface name `{name}`: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// The async runtime could not be built.
    #[error("starting the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The TUN device could not be created (no /dev/net/tun, no CAP_NET_ADMIN, name taken).
    #[error("creating TUN device {name}: {message}")]
    Tun { name: String, message: String },
    /// The control socket could not be created.
    #[error("creating control socket {path}: {message}")]
    ControlSocket { path: String, message: String },
    /// gotatun refused to build the device.
    #[error("starting WireGuard device {name}: {message}")]
    Device { name: String, message: String },
    /// A signal handler could not be installed.
    #[error("installing the {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        source: std::io::Error,
    },
}
