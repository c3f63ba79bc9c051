//! The flow socket: newline-delimited JSON flows for `porin observe`.
//!
//! A client writes one request line (`{"last": 20, "follow": true}`) and reads one
//! JSON object per line: flows, and `{"lost_events": N}` when it fell behind.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, info};

use crate::ring::FlowRing;

/// What a client asks for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FlowRequest {
    /// How many of the stored flows to send first.
    #[serde(default)]
    pub last: usize,
    /// Keep the connection open and send new flows as they come.
    #[serde(default)]
    pub follow: bool,
}

/// Serve the ring on a unix socket (mode 0600).
pub async fn serve_flows(path: &Path, ring: Arc<FlowRing>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    info!(socket = %path.display(), "flow socket listening");
    loop {
        let (stream, _) = listener.accept().await?;
        let ring = ring.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, ring).await {
                debug!(error = %e, "flow client went away");
            }
        });
    }
}

async fn answer(stream: UnixStream, ring: Arc<FlowRing>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let request: FlowRequest = serde_json::from_str(line.trim()).unwrap_or_default();
    // Subscribe before reading the backlog so nothing falls between the two.
    let mut live = ring.follow();
    for flow in ring.last(request.last) {
        write_line(&mut write, &serde_json::to_string(&*flow)?).await?;
    }
    if !request.follow {
        return write.shutdown().await;
    }
    loop {
        match live.recv().await {
            Ok(flow) => write_line(&mut write, &serde_json::to_string(&*flow)?).await?,
            Err(RecvError::Lagged(n)) => {
                write_line(&mut write, &format!("{{\"lost_events\":{n}}}")).await?;
            }
            Err(RecvError::Closed) => return Ok(()),
        }
    }
}

async fn write_line(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    text: &str,
) -> std::io::Result<()> {
    write.write_all(text.as_bytes()).await?;
    write.write_all(b"\n").await
}
