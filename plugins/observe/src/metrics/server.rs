//! The `/metrics` endpoint of Hubble metrics.

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

/// The OpenMetrics content type (exemplars need OpenMetrics).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Error)]
pub enum MetricsServeError {
    #[error("cannot listen on {addr} for Hubble metrics: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("Hubble metrics server on {addr} failed: {source}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A router serving `registry` on `/metrics`.
pub fn metrics_router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(registry)
}

/// Bind `addr` now (so a taken port fails the plugin's start), serve later.
pub fn serve_metrics(
    addr: SocketAddr,
    registry: Arc<Registry>,
) -> Result<impl std::future::Future<Output = Result<(), MetricsServeError>>, MetricsServeError> {
    let std_listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| MetricsServeError::Bind { addr, source })?;
    let listener = tokio::net::TcpListener::from_std(std_listener)
        .map_err(|source| MetricsServeError::Bind { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    info!(addr = %local, "serving Hubble metrics");
    Ok(async move {
        axum::serve(listener, metrics_router(registry))
            .await
            .map_err(|source| MetricsServeError::Serve { addr, source })
    })
}

async fn scrape(State(registry): State<Arc<Registry>>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response(),
        Err(err) => {
            warn!(error = %err, "encoding Hubble metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed").into_response()
        }
    }
}
