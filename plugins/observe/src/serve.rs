//! Where the Hubble API listens: the agent's unix socket (mode 0600) and,
//! optionally, a TCP address.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hubble_proto::observer::observer_server::ObserverServer;
use hubble_proto::peer::peer_server::PeerServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;
use tracing::info;

use crate::grpc::HubbleService;

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
    #[error("serving the Hubble API on {on}: {source}")]
    Transport {
        on: String,
        source: tonic::transport::Error,
    },
}

/// Bind the unix socket now (so clients can connect as soon as this returns) and
/// serve on it until the task is dropped.
pub fn bind_unix(
    path: &Path,
    service: HubbleService,
) -> Result<impl Future<Output = Result<(), ServeError>> + use<>, ServeError> {
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
    info!(socket = %path.display(), "Hubble API listening");
    let on = path.display().to_string();
    Ok(async move {
        router(service)
            .serve_with_incoming(UnixListenerStream::new(listener))
            .await
            .map_err(|source| ServeError::Transport { on, source })
    })
}

/// Serve on `[host]:port` (`:4244` means every address).
pub async fn serve_tcp(address: &str, service: HubbleService) -> Result<(), ServeError> {
    let full = if address.starts_with(':') {
        format!("0.0.0.0{address}")
    } else {
        address.to_string()
    };
    let addr: SocketAddr = full.parse().map_err(|_| ServeError::Address {
        address: address.to_string(),
    })?;
    info!(%addr, "Hubble API listening on TCP");
    router(service)
        .serve(addr)
        .await
        .map_err(|source| ServeError::Transport {
            on: addr.to_string(),
            source,
        })
}

fn router(service: HubbleService) -> tonic::transport::server::Router {
    Server::builder()
        .add_service(ObserverServer::new(service.clone()))
        .add_service(PeerServer::new(service))
}
