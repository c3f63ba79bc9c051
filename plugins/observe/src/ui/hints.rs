//! Policy hints: why an edge of the map was dropped. The UI server only asks; the
//! answer comes from whoever holds the policies (the `porin` binary traces them
//! with the same code as `porin policy trace`), so this crate needs no policy
//! engine.

use serde::{Deserialize, Serialize};

/// A connection of the map to explain: both sides' security labels (as the
/// flows carry them, `k8s:app=x`, `reserved:world`) and the destination port.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct PolicyHintQuery {
    /// Comma-separated labels of the source.
    pub src: String,
    /// Comma-separated labels of the destination.
    pub dst: String,
    /// Destination port (0: none, e.g. ICMP).
    #[serde(default)]
    pub port: u16,
    /// `TCP`, `UDP`, `SCTP`, `ICMPv4`, ...
    #[serde(default)]
    pub protocol: String,
}

/// The answer shown next to a dropped edge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyHint {
    /// `ALLOWED` or `DENIED`.
    pub verdict: String,
    /// One line for people: which side and which policy (or default deny) decided.
    pub summary: String,
    /// The full trace, as `porin policy trace -o json` prints it.
    pub trace: serde_json::Value,
    /// Problems with the policy sources (the last good policies were used).
    pub warnings: Vec<String>,
}

/// Where policy hints come from.
pub trait PolicyHints: Send + Sync + 'static {
    /// Explain a connection; an error is a message naming the bad input.
    fn explain(&self, query: &PolicyHintQuery) -> Result<PolicyHint, String>;
}

/// No policy source was configured: every hint says so.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPolicyHints;

impl PolicyHints for NoPolicyHints {
    fn explain(&self, _query: &PolicyHintQuery) -> Result<PolicyHint, String> {
        Err("no policy source: start the UI with --ui-policy PATH to trace drops".to_owned())
    }
}
