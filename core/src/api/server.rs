//! The agent side of the local API.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use tokio::net::UnixListener;
use tracing::{info, warn};

use super::{
    AddEndpointRequest, ApiError, DeleteEndpointQuery, EndpointInfo, ErrorBody, IdentityInfo,
    MapInfo, PluginStatus, PluginToggle, StatusResponse,
};

/// What the agent exposes through its API. Implemented by the agent; the server
/// only translates HTTP to these calls. Mutating calls may block (they run
/// netlink commands), so the server runs them on the blocking pool.
pub trait AgentApi: Send + Sync + 'static {
    fn status(&self) -> StatusResponse;
    fn endpoints(&self) -> Vec<EndpointInfo>;
    fn identities(&self) -> Vec<IdentityInfo>;
    fn plugins(&self) -> Vec<PluginStatus>;
    /// The datapath's pinned maps with their entries counted now (blocking: syscalls).
    fn maps(&self) -> Vec<MapInfo>;
    /// A running plugin's own status document (`None`: not running or nothing to report).
    fn plugin_status(&self, name: &str) -> Option<serde_json::Value>;
    fn add_endpoint(&self, request: AddEndpointRequest) -> Result<EndpointInfo, ApiError>;
    /// Delete a pod's endpoint; with `container_id`, only if it was made for that container.
    fn delete_endpoint(
        &self,
        namespace: &str,
        pod: &str,
        container_id: Option<&str>,
    ) -> Result<(), ApiError>;
    /// Turns a plugin on or off without restarting the agent.
    fn set_plugin_enabled(&self, name: &str, enabled: bool) -> Result<PluginToggle, ApiError>;
}

type Api = Arc<dyn AgentApi>;

/// Serve the API on a unix socket at `path` (mode 0600) until the task is dropped.
pub async fn serve_api(path: &Path, api: Api) -> Result<(), ApiError> {
    let bind_err = |source| ApiError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(bind_err)?;
    }
    // A socket left by a previous (crashed) agent would make bind fail.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    info!(socket = %path.display(), "agent API listening");
    axum::serve(listener, router(api)).await.map_err(bind_err)
}

fn router(api: Api) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/endpoints", get(endpoints).post(add_endpoint))
        .route("/v1/endpoints/{namespace}/{pod}", delete(delete_endpoint))
        .route("/v1/identities", get(identities))
        .route("/v1/plugins", get(plugins))
        .route("/v1/maps", get(maps))
        .route("/v1/plugins/{name}/status", get(plugin_status))
        .route("/v1/plugins/{name}/enable", post(enable_plugin))
        .route("/v1/plugins/{name}/disable", post(disable_plugin))
        .with_state(api)
}

async fn status(State(api): State<Api>) -> Json<StatusResponse> {
    Json(api.status())
}

async fn endpoints(State(api): State<Api>) -> Json<Vec<EndpointInfo>> {
    Json(api.endpoints())
}

async fn identities(State(api): State<Api>) -> Json<Vec<IdentityInfo>> {
    Json(api.identities())
}

async fn plugins(State(api): State<Api>) -> Json<Vec<PluginStatus>> {
    Json(api.plugins())
}

async fn maps(State(api): State<Api>) -> Response {
    // Counting walks every map: keep it off the runtime.
    match tokio::task::spawn_blocking(move || api.maps()).await {
        Ok(maps) => Json(maps).into_response(),
        Err(join) => error_response(&ApiError::Internal(format!("map count failed: {join}"))),
    }
}

async fn plugin_status(State(api): State<Api>, UrlPath(name): UrlPath<String>) -> Response {
    // Plugins may run commands to answer (e.g. `wg show`): keep them off the runtime.
    let result = tokio::task::spawn_blocking(move || {
        let status = api.plugin_status(&name);
        (name, status)
    })
    .await;
    match result {
        Ok((_, Some(status))) => Json(status).into_response(),
        Ok((name, None)) => error_response(&ApiError::NotFound(format!(
            "plugin {name} is not running or reports no status"
        ))),
        Err(join) => error_response(&ApiError::Internal(format!("status task failed: {join}"))),
    }
}

async fn enable_plugin(State(api): State<Api>, UrlPath(name): UrlPath<String>) -> Response {
    toggle_plugin(api, name, true).await
}

async fn disable_plugin(State(api): State<Api>, UrlPath(name): UrlPath<String>) -> Response {
    toggle_plugin(api, name, false).await
}

async fn toggle_plugin(api: Api, name: String, enabled: bool) -> Response {
    // Loading programs and stopping plugins block: keep them off the runtime.
    match tokio::task::spawn_blocking(move || api.set_plugin_enabled(&name, enabled)).await {
        Ok(Ok(report)) => Json(report).into_response(),
        Ok(Err(e)) => error_response(&e),
        Err(join) => error_response(&ApiError::Internal(format!("plugin task failed: {join}"))),
    }
}

async fn add_endpoint(State(api): State<Api>, Json(request): Json<AddEndpointRequest>) -> Response {
    let result = tokio::task::spawn_blocking(move || api.add_endpoint(request)).await;
    match result {
        Ok(Ok(info)) => Json(info).into_response(),
        Ok(Err(e)) => error_response(&e),
        Err(join) => error_response(&ApiError::Internal(format!("endpoint task failed: {join}"))),
    }
}

async fn delete_endpoint(
    State(api): State<Api>,
    UrlPath((namespace, pod)): UrlPath<(String, String)>,
    Query(query): Query<DeleteEndpointQuery>,
) -> Response {
    let result = tokio::task::spawn_blocking(move || {
        api.delete_endpoint(&namespace, &pod, query.container_id.as_deref())
    })
    .await;
    match result {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => error_response(&e),
        Err(join) => error_response(&ApiError::Internal(format!("endpoint task failed: {join}"))),
    }
}

fn error_response(error: &ApiError) -> Response {
    let status = match error {
        ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
        ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    warn!(%error, "agent API request failed");
    (
        status,
        Json(ErrorBody {
            error: error.to_string(),
        }),
    )
        .into_response()
}
