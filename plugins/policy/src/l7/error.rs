//! Errors of the L7 proxy.

use std::net::SocketAddr;

use thiserror::Error;

/// The proxy could not start.
#[derive(Debug, Error)]
pub enum L7ProxyError {
    #[error("L7 proxy: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}
