//! How the proxy learns where a redirected connection was going.
//!
//! The datapath redirect records each connection's original destination;
//! [`OriginalDestination`] is the one seam through which the proxy asks for
//! it, so the datapath's lookup plugs in without touching the proxy.

use std::net::SocketAddr;

use thiserror::Error;
use tokio::net::TcpStream;

/// The original destination of a connection is unknown.
#[derive(Debug, Error)]
#[error("original destination of {peer} -> {local}: {reason}")]
pub struct OriginalDestinationError {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub reason: String,
}

/// Where a connection accepted by the proxy was originally going.
pub trait OriginalDestination: Send + Sync {
    fn original_destination(
        &self,
        stream: &TcpStream,
    ) -> Result<SocketAddr, OriginalDestinationError>;
}

/// Every connection goes to one server: a proxy a client is pointed at
/// explicitly (tests and `scripts/bench l7`, before the datapath redirect).
#[derive(Debug, Clone, Copy)]
pub struct FixedDestination(pub SocketAddr);

impl OriginalDestination for FixedDestination {
    fn original_destination(
        &self,
        _stream: &TcpStream,
    ) -> Result<SocketAddr, OriginalDestinationError> {
        Ok(self.0)
    }
}
