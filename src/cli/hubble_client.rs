//! Connecting to a Hubble API: a unix socket path or `host:port`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use porin_observe::hubble_proto::observer::observer_client::ObserverClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Where a Hubble server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    Unix(PathBuf),
    Tcp(String),
}

impl Server {
    /// `unix:///path`, `/path` or `./path` is a socket; anything else `host:port`.
    pub fn parse(text: &str) -> Self {
        if let Some(path) = text.strip_prefix("unix://") {
            Server::Unix(PathBuf::from(path))
        } else if text.contains('/') {
            Server::Unix(PathBuf::from(text))
        } else {
            Server::Tcp(text.to_string())
        }
    }

    pub async fn connect(&self) -> Result<ObserverClient<Channel>> {
        let channel = match self {
            Server::Unix(path) => {
                let path = path.clone();
                // The URI is required by tonic but unused: the connector picks the socket.
                Endpoint::try_from("http://[::1]:4245")?
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                        }
                    }))
                    .await
            }
            Server::Tcp(addr) => {
                Endpoint::from_shared(format!("http://{addr}"))?
                    .connect()
                    .await
            }
        }
        .with_context(|| {
            format!("connecting to the Hubble API at {self} (is the observe plugin enabled?)")
        })?;
        Ok(ObserverClient::new(channel))
    }
}

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Server::Unix(p) => write!(f, "unix://{}", p.display()),
            Server::Tcp(a) => write!(f, "{a}"),
        }
    }
}
