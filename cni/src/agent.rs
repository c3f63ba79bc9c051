//! Talking to the agent: its API errors in CNI terms.

use porin_core::api::{AgentClient, ApiError};

use crate::error::{CniError, ErrorCode};

/// Translate an agent API error into the CNI error a runtime acts on: an
/// unreachable or silent agent is "try again later" (the runtime retries), a
/// refusal is the agent's own message.
pub fn to_cni_error(client: &AgentClient, what: &str, error: ApiError) -> CniError {
    let socket = client.socket().display().to_string();
    match error {
        ApiError::Connect { source, .. } => CniError::new(
            ErrorCode::TryAgainLater,
            format!("cannot reach the Porin agent at {socket} to {what}"),
            format!(
                "{source}; is `porin agent` running on this node? (agentSocket in the CNI config names the socket)"
            ),
        ),
        ApiError::Http { message, .. } => CniError::new(
            ErrorCode::TryAgainLater,
            format!("the Porin agent at {socket} did not answer the request to {what}"),
            message,
        ),
        ApiError::Status {
            status: 404,
            message,
            ..
        } => CniError::new(
            ErrorCode::UnknownContainer,
            format!("cannot {what}"),
            message,
        ),
        ApiError::Status {
            status, message, ..
        } => CniError::new(
            ErrorCode::AgentFailed,
            format!("the Porin agent refused to {what} (HTTP {status})"),
            message,
        ),
        other => CniError::new(
            ErrorCode::AgentFailed,
            format!("the Porin agent failed to {what}"),
            other.to_string(),
        ),
    }
}
