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
    #[error(
        "L7 proxy: cannot make the listener on {addr} transparent (IP_TRANSPARENT needs CAP_NET_ADMIN): {source}"
    )]
    Transparent {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    LocalDelivery(#[from] super::local_delivery::LocalDeliveryError),
}
