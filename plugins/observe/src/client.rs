//! Connecting to a Hubble API (an agent's or the relay's): a unix socket path or
//! `host:port`. Used by `porin observe` and by the relay to reach the agents.

use std::path::PathBuf;

use hubble_proto::observer::observer_client::ObserverClient;
use hubble_proto::peer::peer_client::PeerClient;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::tls::{ClientTls, TlsError};

/// Where a Hubble server listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HubbleAddress {
    Unix(PathBuf),
    Tcp(String),
}

/// Why a Hubble server could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to the Hubble API at {address}: {source}")]
    Transport {
        address: HubbleAddress,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("connecting to the Hubble API at {address}: {source}")]
    Tls {
        address: HubbleAddress,
        #[source]
        source: TlsError,
    },
}

impl HubbleAddress {
    /// `unix:///path`, `/path` or `./path` is a socket; anything else `host:port`
    /// (`:4245` means this host).
    pub fn parse(text: &str) -> Self {
        if let Some(path) = text.strip_prefix("unix://") {
            HubbleAddress::Unix(PathBuf::from(path))
        } else if text.contains('/') {
            HubbleAddress::Unix(PathBuf::from(text))
        } else if let Some(port) = text.strip_prefix(':') {
            HubbleAddress::Tcp(format!("127.0.0.1:{port}"))
        } else {
            HubbleAddress::Tcp(text.to_string())
        }
    }

    /// A channel to the server, connected now.
    pub async fn channel(&self) -> Result<Channel, ConnectError> {
        self.channel_with(None).await
    }

    /// A channel to the server, connected now; over TLS when `tls` is given and the
    /// server is on TCP (unix sockets are plaintext).
    pub async fn channel_with(&self, tls: Option<&ClientTls>) -> Result<Channel, ConnectError> {
        let err = |source| ConnectError::Transport {
            address: self.clone(),
            source,
        };
        match self {
            HubbleAddress::Unix(path) => {
                let path = path.clone();
                // tonic requires a URI; the connector ignores it and dials the socket.
                Endpoint::from_static("http://localhost")
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                        }
                    }))
                    .await
                    .map_err(err)
            }
            HubbleAddress::Tcp(addr) => {
                let Some(tls) = tls else {
                    return Endpoint::from_shared(format!("http://{addr}"))
                        .map_err(err)?
                        .connect()
                        .await
                        .map_err(err);
                };
                let config = tls.config().map_err(|source| ConnectError::Tls {
                    address: self.clone(),
                    source,
                })?;
                Endpoint::from_shared(format!("https://{addr}"))
                    .map_err(err)?
                    .tls_config(config)
                    .map_err(err)?
                    .connect()
                    .await
                    .map_err(err)
            }
        }
    }

    /// An Observer client, connected now.
    pub async fn observer(&self) -> Result<ObserverClient<Channel>, ConnectError> {
        self.observer_with(None).await
    }

    /// An Observer client, connected now (over TLS when `tls` is given).
    pub async fn observer_with(
        &self,
        tls: Option<&ClientTls>,
    ) -> Result<ObserverClient<Channel>, ConnectError> {
        Ok(ObserverClient::new(self.channel_with(tls).await?))
    }

    /// A Peer client, connected now.
    pub async fn peer(&self) -> Result<PeerClient<Channel>, ConnectError> {
        self.peer_with(None).await
    }

    /// A Peer client, connected now (over TLS when `tls` is given).
    pub async fn peer_with(
        &self,
        tls: Option<&ClientTls>,
    ) -> Result<PeerClient<Channel>, ConnectError> {
        Ok(PeerClient::new(self.channel_with(tls).await?))
    }
}

impl std::fmt::Display for HubbleAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HubbleAddress::Unix(p) => write!(f, "unix://{}", p.display()),
            HubbleAddress::Tcp(a) => write!(f, "{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_sockets_or_host_ports() {
        assert_eq!(
            HubbleAddress::parse("/run/porin/hubble.sock"),
            HubbleAddress::Unix("/run/porin/hubble.sock".into())
        );
        assert_eq!(
            HubbleAddress::parse("unix:///x.sock"),
            HubbleAddress::Unix("/x.sock".into())
        );
        assert_eq!(
            HubbleAddress::parse("localhost:4245"),
            HubbleAddress::Tcp("localhost:4245".into())
        );
        assert_eq!(
            HubbleAddress::parse(":4245"),
            HubbleAddress::Tcp("127.0.0.1:4245".into())
        );
    }
}
