//! CNI errors: the spec's well-known codes and the JSON a runtime reads on failure.

use serde::Serialize;
use thiserror::Error;

/// Error codes of the CNI spec (0-99 are the spec's, 100 and up the plugin's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    IoFailure = 5,
    DecodeFailure = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    /// STATUS: the plugin cannot serve ADD now.
    NotAvailable = 50,
    /// Porin's own: the agent refused or failed the request.
    AgentFailed = 100,
    /// Porin's own: CHECK found the container's network differs from what ADD made.
    StateDiffers = 101,
}

/// A failed CNI command: the spec's code, a message for people and details.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{msg}: {details}")]
pub struct CniError {
    pub code: ErrorCode,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The error object the spec asks for on stdout.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            details: &'a str,
        }
        serde_json::to_value(Body {
            cni_version,
            code: self.code as u32,
            msg: &self.msg,
            details: &self.details,
        })
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_the_spec_fields() {
        let e = CniError::new(ErrorCode::TryAgainLater, "agent unreachable", "socket /x");
        let json = e.to_json("1.0.0");
        assert_eq!(json["cniVersion"], "1.0.0");
        assert_eq!(json["code"], 11);
        assert_eq!(json["msg"], "agent unreachable");
        assert_eq!(json["details"], "socket /x");
    }
}
