//! Plugin health as shown by `porin status` and `porin plugins list`.

use serde::{Deserialize, Serialize};

/// A plugin's health. A failed plugin never stops the agent or other plugins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "message", rename_all = "kebab-case")]
pub enum Health {
    /// Configured but not started yet.
    Starting,
    /// Running and doing its job.
    Ok,
    /// Running, but part of its job is failing.
    Degraded(String),
    /// Not running because of an error.
    Failed(String),
    /// Stopped on purpose (disabled).
    Stopped,
}

impl Health {
    /// Whether this state counts as healthy for readiness.
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok)
    }
}
