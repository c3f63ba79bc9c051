//! The CLI side of the local API: HTTP/1.1 over a unix socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use super::{
    AddEndpointRequest, ApiError, EndpointInfo, ErrorBody, IdentityInfo, MapInfo, PluginStatus,
    PluginToggle, StatusResponse,
};

/// A client of one agent's API socket.
#[derive(Debug, Clone)]
pub struct AgentClient {
    socket: PathBuf,
    timeout: Duration,
}

impl AgentClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: Duration::from_secs(30),
        }
    }

    /// The same client with another limit per request (readiness polls use a short one,
    /// so a request caught by a restarting agent is retried rather than waited on).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub async fn status(&self) -> Result<StatusResponse, ApiError> {
        self.call(Method::GET, "/v1/status", None::<&()>).await
    }

    pub async fn endpoints(&self) -> Result<Vec<EndpointInfo>, ApiError> {
        self.call(Method::GET, "/v1/endpoints", None::<&()>).await
    }

    pub async fn identities(&self) -> Result<Vec<IdentityInfo>, ApiError> {
        self.call(Method::GET, "/v1/identities", None::<&()>).await
    }

    pub async fn plugins(&self) -> Result<Vec<PluginStatus>, ApiError> {
        self.call(Method::GET, "/v1/plugins", None::<&()>).await
    }

    /// The datapath's pinned maps with their entries counted now (`/v1/maps`).
    pub async fn maps(&self) -> Result<Vec<MapInfo>, ApiError> {
        self.call(Method::GET, "/v1/maps", None::<&()>).await
    }

    /// A running plugin's own status document (`/v1/plugins/<name>/status`).
    pub async fn plugin_status(&self, name: &str) -> Result<serde_json::Value, ApiError> {
        let uri = format!("/v1/plugins/{name}/status");
        self.call(Method::GET, &uri, None::<&()>).await
    }

    /// Turns plugin `name` on or off (`/v1/plugins/<name>/enable|disable`).
    pub async fn set_plugin_enabled(
        &self,
        name: &str,
        enabled: bool,
    ) -> Result<PluginToggle, ApiError> {
        let action = if enabled { "enable" } else { "disable" };
        let uri = format!("/v1/plugins/{name}/{action}");
        self.call(Method::POST, &uri, None::<&()>).await
    }

    pub async fn add_endpoint(
        &self,
        request: &AddEndpointRequest,
    ) -> Result<EndpointInfo, ApiError> {
        self.call(Method::POST, "/v1/endpoints", Some(request))
            .await
    }

    pub async fn delete_endpoint(&self, namespace: &str, pod: &str) -> Result<(), ApiError> {
        let uri = format!("/v1/endpoints/{namespace}/{pod}");
        self.raw(Method::DELETE, &uri, None::<&()>)
            .await
            .map(|_| ())
    }

    /// Delete a pod's endpoint only if it was made for `container_id` (CNI DEL).
    pub async fn delete_container_endpoint(
        &self,
        namespace: &str,
        pod: &str,
        container_id: &str,
    ) -> Result<(), ApiError> {
        let query = url_query_value(container_id);
        let uri = format!("/v1/endpoints/{namespace}/{pod}?container_id={query}");
        self.raw(Method::DELETE, &uri, None::<&()>)
            .await
            .map(|_| ())
    }

    async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        uri: &str,
        body: Option<&B>,
    ) -> Result<T, ApiError> {
        let bytes = self.raw(method.clone(), uri, body).await?;
        serde_json::from_slice(&bytes).map_err(|source| ApiError::Decode {
            method: method.to_string(),
            uri: uri.to_string(),
            source,
        })
    }

    async fn raw<B: Serialize>(
        &self,
        method: Method,
        uri: &str,
        body: Option<&B>,
    ) -> Result<Bytes, ApiError> {
        let http_err = |message: String| ApiError::Http {
            method: method.to_string(),
            uri: uri.to_string(),
            message,
        };
        let payload = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| http_err(e.to_string()))?,
            None => Vec::new(),
        };
        let request = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header("host", "agent")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| http_err(e.to_string()))?;

        let exchange = async {
            let stream =
                UnixStream::connect(&self.socket)
                    .await
                    .map_err(|source| ApiError::Connect {
                        path: self.socket.clone(),
                        source,
                    })?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| http_err(e.to_string()))?;
            tokio::spawn(connection);
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| http_err(e.to_string()))?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| http_err(e.to_string()))?
                .to_bytes();
            if status.is_success() {
                Ok(bytes)
            } else {
                let message = serde_json::from_slice::<ErrorBody>(&bytes)
                    .map(|b| b.error)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
                Err(ApiError::Status {
                    method: method.to_string(),
                    uri: uri.to_string(),
                    status: status.as_u16(),
                    message,
                })
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| http_err(format!("no answer within {:?}", self.timeout)))?
    }
}

/// Percent-encode a query value (container ids are `[A-Za-z0-9_.-]` by the CNI spec,
/// but a malformed one must still make a valid URI).
fn url_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
