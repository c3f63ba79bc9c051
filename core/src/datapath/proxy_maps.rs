//! Read access to `porin_proxy_redir` (`bpf/lib/proxy.h`): the original destination of every
//! connection the pod programs redirected to a node proxy, keyed by the client's address,
//! port and protocol. Proxies open it from its pin and look their peer up.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use aya::maps::{HashMap, MapData, MapError};

use super::abi::{ProxyKey, ProxyValue};
use super::error::DatapathError;
use super::maps::open_pinned;

/// Client side of a redirected connection -> its original destination.
pub const MAP_PROXY_REDIR: &str = "porin_proxy_redir";

/// One redirected connection, as the datapath recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyRedirect {
    /// Where the client sent it (after load balancing).
    pub original_destination: SocketAddrV4,
    /// The proxy port the policy chose.
    pub proxy_port: u16,
    /// The client's local endpoint id.
    pub endpoint_id: u32,
    /// The identity of the original destination.
    pub destination_identity: u32,
}

/// The pinned redirection map.
pub struct ProxyRedirects {
    map: HashMap<MapData, ProxyKey, ProxyValue>,
}

impl ProxyRedirects {
    /// Opens the pinned map (`PluginContext::map_pin_path(MAP_PROXY_REDIR)`).
    pub fn open(pin: &Path) -> Result<Self, DatapathError> {
        Ok(Self {
            map: HashMap::try_from(open_pinned(pin)?)
                .map_err(|e| DatapathError::map(MAP_PROXY_REDIR, e))?,
        })
    }

    /// The redirection of the connection whose client is `client` (`proto`: 6 TCP, 17 UDP);
    /// `None` when the datapath redirected nothing from there.
    pub fn get(
        &self,
        client: SocketAddrV4,
        proto: u8,
    ) -> Result<Option<ProxyRedirect>, DatapathError> {
        let key = ProxyKey {
            client_addr: u32::from_ne_bytes(client.ip().octets()),
            client_port: client.port(),
            proto,
            pad: 0,
        };
        match self.map.get(&key, 0) {
            Ok(v) => Ok(Some(ProxyRedirect {
                original_destination: SocketAddrV4::new(
                    Ipv4Addr::from(v.orig_daddr.to_ne_bytes()),
                    v.orig_dport,
                ),
                proxy_port: v.proxy_port,
                endpoint_id: v.endpoint_id,
                destination_identity: v.dst_identity,
            })),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(DatapathError::map(MAP_PROXY_REDIR, e)),
        }
    }
}
