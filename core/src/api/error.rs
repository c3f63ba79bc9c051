//! API errors on both sides of the socket.

use std::path::PathBuf;

use thiserror::Error;

/// Errors of the agent API client and server.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("cannot reach the agent at {path}: {source} (is `porin agent` running?)")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve the agent API on {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("agent API request {method} {uri} failed: {message}")]
    Http {
        method: String,
        uri: String,
        message: String,
    },
    #[error("agent answered {status} to {method} {uri}: {message}")]
    Status {
        method: String,
        uri: String,
        status: u16,
        message: String,
    },
    #[error("agent answered {method} {uri} with a body that is not the expected JSON: {source}")]
    Decode {
        method: String,
        uri: String,
        #[source]
        source: serde_json::Error,
    },
    /// An error of the request itself, returned by the server to the caller.
    #[error("{0}")]
    BadRequest(String),
    /// The object asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The agent failed to do what was asked.
    #[error("{0}")]
    Internal(String),
}
