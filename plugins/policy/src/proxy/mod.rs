//! How a node proxy learns where a redirected connection was going.
//!
//! The pod programs steer a connection whose policy verdict carries a proxy port (DNS
//! rules, HTTP rules) to `{node IP, proxy port}` by DNAT, and record its original
//! destination in the pinned map `porin_proxy_redir`, keyed by the client's address, port
//! and protocol (`bpf/lib/proxy.h`). A proxy therefore listens in the node's network
//! namespace on the node IP and its port (bind to the node IP, not `0.0.0.0`, so its
//! replies leave with the source the datapath translates back), and for every accepted
//! TCP connection or received UDP datagram asks [`OriginalDestinations::tcp`],
//! [`OriginalDestinations::udp`] or [`OriginalDestinations::lookup`] with the peer
//! address: the answer is the address the client sent to (after load balancing: the
//! chosen backend), where the proxy forwards what it allows. Its replies need nothing
//! special: the pod program gives them the original destination as their source. Open it
//! once with `OriginalDestinations::open(&ctx.map_pin_path(MAP_PROXY_REDIR))`; lookups
//! are one map read each and may run on any thread.

use std::net::SocketAddr;
use std::path::Path;

use porin_core::datapath::{DatapathError, ProxyRedirect, ProxyRedirects};

pub use porin_core::datapath::MAP_PROXY_REDIR;

/// IPPROTO_TCP.
const TCP: u8 = 6;
/// IPPROTO_UDP.
const UDP: u8 = 17;

/// Why the original destination of a peer is unknown.
#[derive(Debug, thiserror::Error)]
pub enum OriginalDestinationError {
    #[error("opening or reading the proxy redirection map: {0}")]
    Map(#[from] DatapathError),
    #[error("the peer address of the connection: {0}")]
    PeerAddress(#[source] std::io::Error),
    #[error("{peer} ({proto}) was not redirected by the datapath")]
    NotRedirected {
        peer: SocketAddr,
        proto: &'static str,
    },
    #[error("{peer}: only IPv4 connections are redirected")]
    NotIpv4 { peer: SocketAddr },
}

/// The datapath's record of redirected connections.
pub struct OriginalDestinations {
    map: ProxyRedirects,
}

impl OriginalDestinations {
    /// Opens the pinned `porin_proxy_redir` map.
    pub fn open(pin: &Path) -> Result<Self, OriginalDestinationError> {
        Ok(Self {
            map: ProxyRedirects::open(pin)?,
        })
    }

    /// The original destination of an accepted TCP connection.
    pub fn tcp(
        &self,
        stream: &tokio::net::TcpStream,
    ) -> Result<SocketAddr, OriginalDestinationError> {
        let peer = stream
            .peer_addr()
            .map_err(OriginalDestinationError::PeerAddress)?;
        Ok(self
            .lookup(peer, Transport::Tcp)?
            .original_destination
            .into())
    }

    /// The original destination of a UDP datagram received from `peer`.
    pub fn udp(&self, peer: SocketAddr) -> Result<SocketAddr, OriginalDestinationError> {
        Ok(self
            .lookup(peer, Transport::Udp)?
            .original_destination
            .into())
    }

    /// Everything the datapath recorded about the connection from `peer`.
    pub fn lookup(
        &self,
        peer: SocketAddr,
        transport: Transport,
    ) -> Result<ProxyRedirect, OriginalDestinationError> {
        let SocketAddr::V4(v4) = peer else {
            return Err(OriginalDestinationError::NotIpv4 { peer });
        };
        self.map
            .get(v4, transport.proto())?
            .ok_or(OriginalDestinationError::NotRedirected {
                peer,
                proto: transport.name(),
            })
    }
}

/// The transport of a redirected connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    fn proto(self) -> u8 {
        match self {
            Self::Tcp => TCP,
            Self::Udp => UDP,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        }
    }
}

mod ports;

pub use ports::{DEFAULT_DNS_PROXY_PORT, DEFAULT_HTTP_PROXY_PORT, ProxyPorts};
