//! Where a Hubble API listens: the agent's unix socket (mode 0600), optionally a
//! TCP address, and the relay's address (TCP by default, or a unix socket).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hubble_proto::observer::observer_server::ObserverServer;
use hubble_proto::peer::peer_server::PeerServer;
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::Server;
use tonic::transport::server::Router;
use tracing::info;

use crate::grpc::HubbleService;
use crate::relay::RelayService;
use crate::tls::{ServerTls, TlsError};

/// Why the Hubble API could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("preparing the Hubble socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{address}` is not a TCP address to listen on")]
    Address { address: String },
    #[error("listening on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("building the gRPC reflection service from the Hubble descriptors: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("configuring TLS for the Hubble API: {source}")]
    TlsConfig { source: tonic::transport::Error },
    #[error("serving the Hubble API on {on}: {source}")]
    Transport {
        on: String,
        source: tonic::transport::Error,
    },
}

/// A bound listener: clients can connect as soon as it exists.
#[derive(Debug)]
pub enum Listener {
    Unix {
        listener: UnixListener,
        path: PathBuf,
    },
    Tcp(TcpListener),
}

impl Listener {
    /// `unix:///path` (or a path) is a unix socket, made mode 0600 (an old one
    /// is replaced); anything else is `[host]:port`, `:port` meaning every
    /// address and port 0 an ephemeral port.
    pub async fn bind(address: &str) -> Result<Self, ServeError> {
        if let Some(path) = address.strip_prefix("unix://") {
            return Self::bind_unix(Path::new(path));
        }
        if address.contains('/') {
            return Self::bind_unix(Path::new(address));
        }
        let addr = tcp_address(address)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind {
                address: address.to_string(),
                source,
            })?;
        Ok(Listener::Tcp(listener))
    }

    /// Bind a unix socket now (must run inside a runtime).
    pub fn bind_unix(path: &Path) -> Result<Self, ServeError> {
        let err = |source| ServeError::Socket {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let listener = UnixListener::bind(path).map_err(err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        Ok(Listener::Unix {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Where clients reach it: `unix:///path` or `ip:port` (the real port when 0
    /// was asked for).
    pub fn local_address(&self) -> String {
        match self {
            Listener::Unix { path, .. } => format!("unix://{}", path.display()),
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "unknown".to_string(), |a| a.to_string()),
        }
    }

    /// Serve `router` until the future is dropped.
    pub async fn serve(self, router: Router) -> Result<(), ServeError> {
        let on = self.local_address();
        info!(on = %on, "Hubble API listening");
        let served = match self {
            Listener::Unix { listener, .. } => {
                router
                    .serve_with_incoming(UnixListenerStream::new(listener))
                    .await
            }
            Listener::Tcp(listener) => {
                router
                    .serve_with_incoming(TcpListenerStream::new(listener))
                    .await
            }
        };
        served.map_err(|source| ServeError::Transport { on, source })
    }
}

/// `host:port`, `:port` for every IPv4 address.
fn tcp_address(address: &str) -> Result<SocketAddr, ServeError> {
    let full = if address.starts_with(':') {
        format!("0.0.0.0{address}")
    } else {
        address.to_string()
    };
    full.parse().map_err(|_| ServeError::Address {
        address: address.to_string(),
    })
}

/// Bind the agent's unix socket now and serve on it until the task is dropped.
pub fn bind_unix(
    path: &Path,
    service: HubbleService,
) -> Result<impl Future<Output = Result<(), ServeError>> + use<>, ServeError> {
    let listener = Listener::bind_unix(path)?;
    Ok(listener.serve(agent_router(service, None)?))
}

/// Serve the agent's API on `[host]:port` (`:4244` means every address), with TLS when
/// `tls` is given.
pub async fn serve_tcp(
    address: &str,
    service: HubbleService,
    tls: Option<&ServerTls>,
) -> Result<(), ServeError> {
    let addr = tcp_address(address)?;
    let router = agent_router(service, tls)?;
    Listener::bind(&addr.to_string()).await?.serve(router).await
}

/// The agent's services: Observer, Peer and server reflection.
pub fn agent_router(service: HubbleService, tls: Option<&ServerTls>) -> Result<Router, ServeError> {
    with_reflection(
        builder(tls)?
            .add_service(ObserverServer::new(service.clone()))
            .add_service(PeerServer::new(service)),
    )
}

/// The relay's services: Observer and server reflection.
pub fn relay_router(relay: RelayService, tls: Option<&ServerTls>) -> Result<Router, ServeError> {
    with_reflection(builder(tls)?.add_service(ObserverServer::new(relay)))
}

/// A server builder, with TLS when `tls` is given.
fn builder(tls: Option<&ServerTls>) -> Result<Server, ServeError> {
    let builder = Server::builder();
    match tls {
        None => Ok(builder),
        Some(tls) => builder
            .tls_config(tls.config()?)
            .map_err(|source| ServeError::TlsConfig { source }),
    }
}

/// gRPC server reflection, `grpc.reflection.v1` and `v1alpha` (grpcurl and
/// older clients ask the latter), describing the Hubble protos.
fn with_reflection(router: Router) -> Result<Router, ServeError> {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(hubble_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(hubble_proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok(router.add_service(v1).add_service(v1alpha))
}
