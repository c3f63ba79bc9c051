//! The UI's HTTP server (axum): the embedded page, the namespace list, the live
//! feed and policy hints, in front of any Hubble Observer API (the relay's own,
//! or an agent's socket).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hubble_proto::observer::GetNamespacesRequest;
use hubble_proto::observer::observer_client::ObserverClient;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tracing::info;

use super::assets;
use super::hints::{PolicyHintQuery, PolicyHints};
use super::stream::{aggregate, request};
use crate::client::HubbleAddress;
use crate::tls::ClientTls;

/// The port `porin relay --ui` documents (Hubble UI's).
pub const DEFAULT_UI_PORT: u16 = 12000;

/// What the UI server reads from and how.
pub struct UiConfig {
    /// The Observer API the flows come from.
    pub upstream: HubbleAddress,
    /// TLS towards `upstream` (TCP only).
    pub tls: Option<ClientTls>,
    /// Where policy hints come from.
    pub hints: Arc<dyn PolicyHints>,
    /// How often a page gets an update.
    pub tick: Duration,
    /// How many stored flows a page starts with.
    pub history: u64,
}

impl UiConfig {
    /// Defaults: an update every 250 ms, the newest 2,000 stored flows first.
    pub fn new(upstream: HubbleAddress, hints: Arc<dyn PolicyHints>) -> Self {
        Self {
            upstream,
            tls: None,
            hints,
            tick: Duration::from_millis(250),
            history: 2_000,
        }
    }
}

/// Why the UI server could not start.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("the UI address {address:?}: {source}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("serving the UI: {0}")]
    Serve(#[source] std::io::Error),
}

/// A bound UI listener: the page can be opened as soon as it exists.
#[derive(Debug)]
pub struct UiListener(TcpListener);

impl UiListener {
    /// `[host]:port`; `:port` means every address, port 0 any free port.
    pub async fn bind(address: &str) -> Result<Self, UiError> {
        let full = match address.strip_prefix(':') {
            Some(port) => format!("0.0.0.0:{port}"),
            None => address.to_owned(),
        };
        TcpListener::bind(&full)
            .await
            .map(Self)
            .map_err(|source| UiError::Bind {
                address: address.to_owned(),
                source,
            })
    }

    /// Like [`UiListener::bind`], without a runtime (a plugin's `start`);
    /// [`UiListener::into_tokio`] finishes it inside one.
    pub fn bind_std(address: &str) -> Result<StdUiListener, UiError> {
        let full = match address.strip_prefix(':') {
            Some(port) => format!("0.0.0.0:{port}"),
            None => address.to_owned(),
        };
        let bound = std::net::TcpListener::bind(&full).and_then(|l| {
            l.set_nonblocking(true)?;
            Ok(l)
        });
        bound.map(StdUiListener).map_err(|source| UiError::Bind {
            address: address.to_owned(),
            source,
        })
    }

    /// The page's URL (`http://host:port/`).
    pub fn url(&self) -> String {
        match self.0.local_addr() {
            Ok(a) => format!("http://{a}/"),
            Err(_) => "http://?/".to_owned(),
        }
    }

    /// Serve the UI until the task is dropped.
    pub async fn serve(self, config: UiConfig) -> Result<(), UiError> {
        info!(url = %self.url(), upstream = %config.upstream, "Flow UI listening");
        axum::serve(self.0, router(config))
            .await
            .map_err(UiError::Serve)
    }
}

/// A UI listener bound outside a runtime.
#[derive(Debug)]
pub struct StdUiListener(std::net::TcpListener);

impl StdUiListener {
    /// The listener for tokio (inside a runtime context).
    pub fn into_tokio(self) -> Result<UiListener, UiError> {
        TcpListener::from_std(self.0)
            .map(UiListener)
            .map_err(UiError::Serve)
    }
}

/// The UI's routes.
pub fn router(config: UiConfig) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { assets::page(assets::INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { assets::page(assets::APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/style.css",
            get(|| async { assets::page(assets::STYLE_CSS, "text/css; charset=utf-8") }),
        )
        .route("/api/namespaces", get(namespaces))
        .route("/api/stream", get(stream))
        .route("/api/policy-hint", get(policy_hint))
        .with_state(Arc::new(config))
}

type Shared = State<Arc<UiConfig>>;

/// An error the page shows as it is.
fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// A client of the upstream Observer API, or why there is none.
async fn observer(config: &UiConfig) -> Result<ObserverClient<Channel>, String> {
    config
        .upstream
        .observer_with(config.tls.as_ref())
        .await
        .map_err(|e| e.to_string())
}

/// `GET /api/namespaces`: the upstream's GetNamespaces, as names.
async fn namespaces(State(config): Shared) -> Response {
    let answer = async {
        let mut client = observer(&config).await?;
        client
            .get_namespaces(GetNamespacesRequest {})
            .await
            .map_err(|s| format!("GetNamespaces on {}: {}", config.upstream, s.message()))
    };
    match answer.await {
        Ok(r) => {
            let mut names: Vec<String> = r
                .into_inner()
                .namespaces
                .into_iter()
                .map(|n| n.namespace)
                .collect();
            names.sort();
            names.dedup();
            Json(serde_json::json!({ "namespaces": names })).into_response()
        }
        Err(message) => error(StatusCode::BAD_GATEWAY, message),
    }
}

#[derive(Debug, Deserialize)]
struct StreamQuery {
    namespace: String,
}

/// A Kubernetes namespace name (RFC 1123 label).
fn valid_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= 63
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `GET /api/stream?namespace=NS`: Server-Sent Events `map`, `flows`, `status`
/// and `upstream-error` (see [`super::stream`]).
async fn stream(State(config): Shared, Query(query): Query<StreamQuery>) -> Response {
    if !valid_namespace(&query.namespace) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "namespace {:?} is not a Kubernetes namespace name",
                query.namespace
            ),
        );
    }
    let flows = async {
        let mut client = observer(&config).await?;
        client
            .get_flows(request(&query.namespace, config.history))
            .await
            .map_err(|s| format!("GetFlows on {}: {}", config.upstream, s.message()))
    };
    let flows = match flows.await {
        Ok(f) => f.into_inner(),
        Err(message) => return error(StatusCode::BAD_GATEWAY, message),
    };
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(aggregate(flows, tx, query.namespace, config.tick));
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `GET /api/policy-hint?src=LABELS&dst=LABELS&port=N&protocol=P`.
async fn policy_hint(State(config): Shared, Query(query): Query<PolicyHintQuery>) -> Response {
    let hints = config.hints.clone();
    match tokio::task::spawn_blocking(move || hints.explain(&query)).await {
        Ok(Ok(hint)) => Json(hint).into_response(),
        Ok(Err(message)) => error(StatusCode::UNPROCESSABLE_ENTITY, message),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("policy trace failed: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names() {
        assert!(valid_namespace("payments"));
        assert!(valid_namespace("kube-system"));
        assert!(!valid_namespace(""));
        assert!(!valid_namespace("a/b"));
        assert!(!valid_namespace("Payments"));
    }
}
