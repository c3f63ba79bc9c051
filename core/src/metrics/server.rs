//! The `/metrics` endpoint.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use thiserror::Error;
use tracing::{info, warn};

/// The OpenMetrics content type prometheus-client's text encoder produces.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("cannot listen on {addr} for metrics: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics server on {addr} failed: {source}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Metrics in the OpenMetrics text format (without `# EOF`) appended to every scrape:
/// families registered elsewhere than `registry`, e.g. native plugins' own registries.
pub type ExtraMetrics = Arc<dyn Fn() -> String + Send + Sync>;

#[derive(Clone)]
struct Scrape {
    registry: Arc<Registry>,
    extra: Option<ExtraMetrics>,
}

/// A router serving `registry` on `/metrics`.
pub fn metrics_router(registry: Arc<Registry>) -> Router {
    metrics_router_with(registry, None)
}

/// A router serving `registry` and `extra` on `/metrics`.
pub fn metrics_router_with(registry: Arc<Registry>, extra: Option<ExtraMetrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Scrape { registry, extra })
}

/// Serve `registry` on `http://<addr>/metrics` until the task is dropped.
pub async fn serve_metrics(addr: SocketAddr, registry: Arc<Registry>) -> Result<(), MetricsError> {
    serve_metrics_with(addr, registry, None).await
}

/// Serve `registry` and `extra` on `http://<addr>/metrics` until the task is dropped.
pub async fn serve_metrics_with(
    addr: SocketAddr,
    registry: Arc<Registry>,
    extra: Option<ExtraMetrics>,
) -> Result<(), MetricsError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    info!(addr = %local, "serving agent metrics");
    axum::serve(listener, metrics_router_with(registry, extra))
        .await
        .map_err(|source| MetricsError::Serve { addr, source })
}

async fn scrape(State(state): State<Scrape>) -> Response {
    let mut body = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        warn!(error = %err, "encoding metrics failed");
        return (StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed").into_response();
    }
    if let Some(extra) = state.extra {
        // May wait for a lock held while plugins toggle: off the runtime's threads.
        let text = tokio::task::spawn_blocking(move || extra())
            .await
            .unwrap_or_default();
        if !text.is_empty()
            && let Some(eof) = body.rfind("# EOF")
        {
            let mut text = text;
            if !text.ends_with('\n') {
                text.push('\n');
            }
            body.insert_str(eof, &text);
        }
    }
    ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response()
}
