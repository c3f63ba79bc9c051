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

/// Every connection goes to one pod's port, looked up by name when the
/// connection comes (`static_destination = "NAMESPACE/POD:PORT"`): steering
/// for tests while no datapath redirect exists.
pub struct PodDestination {
    pub ctx: std::sync::Arc<dyn porin_plugin_sdk::PluginContext>,
    pub namespace: String,
    pub pod: String,
    pub port: u16,
}

impl PodDestination {
    /// Parse `NAMESPACE/POD:PORT`.
    pub fn parse(
        ctx: std::sync::Arc<dyn porin_plugin_sdk::PluginContext>,
        text: &str,
    ) -> Option<Self> {
        let (pod, port) = text.rsplit_once(':')?;
        let (namespace, pod) = pod.split_once('/')?;
        Some(Self {
            ctx,
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            port: port.parse().ok()?,
        })
    }
}

impl OriginalDestination for PodDestination {
    fn original_destination(
        &self,
        stream: &TcpStream,
    ) -> Result<SocketAddr, OriginalDestinationError> {
        let ip = self
            .ctx
            .state()
            .pod_addresses()
            .into_iter()
            .find(|a| a.namespace == self.namespace && a.pod_name == self.pod)
            .map(|a| a.ip);
        ip.map(|ip| SocketAddr::new(ip, self.port))
            .ok_or_else(|| OriginalDestinationError {
                peer: stream
                    .peer_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
                local: stream
                    .local_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
                reason: format!("pod {}/{} has no address", self.namespace, self.pod),
            })
    }
}

/// The datapath's record: the pod program redirected the connection to the proxy
/// (`bpf/lib/proxy.h`, DNAT to the node's HTTP proxy port) and kept its original
/// destination in `porin_proxy_redir`, keyed by the client's address and port.
impl OriginalDestination for crate::proxy::OriginalDestinations {
    fn original_destination(
        &self,
        stream: &TcpStream,
    ) -> Result<SocketAddr, OriginalDestinationError> {
        let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
        self.tcp(stream).map_err(|e| OriginalDestinationError {
            peer: stream.peer_addr().unwrap_or(unknown),
            local: stream.local_addr().unwrap_or(unknown),
            reason: e.to_string(),
        })
    }
}
