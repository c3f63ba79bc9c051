//! The network configuration the runtime writes to stdin (one plugin of a conflist).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{CniError, ErrorCode};

/// The agent socket when the config names none.
pub const DEFAULT_AGENT_SOCKET: &str = "/var/run/porin/agent.sock";

/// The Kubernetes namespace of pods whose runtime passes no `K8S_POD_NAMESPACE`.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Porin's entry of a conflist, as the runtime hands it over.
///
/// Fields of other plugins or added by the runtime (`runtimeConfig`, `capabilities`,
/// `args`...) are accepted and ignored, as the spec lets plugins do.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// The agent API socket (default [`DEFAULT_AGENT_SOCKET`]).
    #[serde(default)]
    pub agent_socket: Option<PathBuf>,
    /// Namespace of pods started without `K8S_POD_NAMESPACE`/`K8S_POD_NAME` in
    /// `CNI_ARGS` (e.g. by `ctr run --cni`), whose pod name is then the container id.
    #[serde(default)]
    pub default_namespace: Option<String>,
    /// Handed back in the ADD result.
    #[serde(default)]
    pub dns: Option<Dns>,
    /// The result of the previous plugin (CHECK, DEL, chained ADD).
    #[serde(default)]
    pub prev_result: Option<serde_json::Value>,
    /// GC: the attachments the runtime still uses (CNI 1.1).
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// DNS settings, as the spec spells them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// One attachment in `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(default)]
    pub ifname: String,
}

impl NetConf {
    /// Parse and check the config from stdin; errors name the field.
    pub fn parse(bytes: &[u8]) -> Result<Self, CniError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let conf: NetConf = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let code = if inner.is_data() {
                ErrorCode::InvalidConfig
            } else {
                ErrorCode::DecodeFailure
            };
            let field = if path == "." {
                "network config (stdin)".to_string()
            } else {
                format!("network config (stdin) field `{path}`")
            };
            CniError::new(
                code,
                format!("{field}: {inner}"),
                "porin-cni reads the network config as JSON on stdin",
            )
        })?;
        conf.check()?;
        Ok(conf)
    }

    /// The agent socket to talk to.
    pub fn agent_socket(&self) -> PathBuf {
        self.agent_socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_AGENT_SOCKET))
    }

    /// The namespace of pods the runtime does not name.
    pub fn default_namespace(&self) -> &str {
        self.default_namespace
            .as_deref()
            .unwrap_or(DEFAULT_NAMESPACE)
    }

    fn check(&self) -> Result<(), CniError> {
        let invalid = |field: &str, why: String| {
            Err(CniError::new(
                ErrorCode::InvalidConfig,
                format!("network config (stdin) field `{field}`: {why}"),
                "see docs/cni.md for porin-cni's settings",
            ))
        };
        crate::version::ensure_supported(&self.cni_version)?;
        if self.name.is_empty() {
            return invalid("name", "must not be empty".to_string());
        }
        if self.plugin_type.is_empty() {
            return invalid("type", "must not be empty".to_string());
        }
        if let Some(socket) = &self.agent_socket
            && !socket.is_absolute()
        {
            return invalid(
                "agentSocket",
                format!("{} is not an absolute path", socket.display()),
            );
        }
        if let Some(ns) = &self.default_namespace
            && !crate::pod::is_dns_name(ns)
        {
            return invalid(
                "defaultNamespace",
                format!("{ns:?} is not a Kubernetes namespace name"),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflist_entry_parses_with_runtime_fields() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"porin","type":"porin-cni",
                 "agentSocket":"/run/porin/agent.sock","runtimeConfig":{"portMappings":[]},
                 "dns":{"nameservers":["10.96.0.10"]}}"#,
        )
        .expect("config");
        assert_eq!(conf.agent_socket(), PathBuf::from("/run/porin/agent.sock"));
        assert_eq!(conf.default_namespace(), "default");
        assert_eq!(
            conf.dns.map(|d| d.nameservers),
            Some(vec!["10.96.0.10".to_string()])
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"p","type":"porin-cni","agentSocket":5}"#,
        )
        .expect_err("bad type");
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        assert!(e.msg.contains("`agentSocket`"), "{e}");
        let e =
            NetConf::parse(br#"{"cniVersion":"1.0.0","type":"porin-cni"}"#).expect_err("no name");
        assert!(e.msg.contains("name"), "{e}");
        let e = NetConf::parse(br#"{"cniVersion":"1.0.0","#).expect_err("truncated");
        assert_eq!(e.code, ErrorCode::DecodeFailure);
        let e = NetConf::parse(br#"{"cniVersion":"9.9.9","name":"p","type":"porin-cni"}"#)
            .expect_err("version");
        assert_eq!(e.code, ErrorCode::IncompatibleVersion);
        let e = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"p","type":"porin-cni","agentSocket":"run/a.sock"}"#,
        )
        .expect_err("relative");
        assert!(e.msg.contains("`agentSocket`"), "{e}");
        let e = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"p","type":"porin-cni","defaultNamespace":"Shop"}"#,
        )
        .expect_err("namespace");
        assert!(e.msg.contains("`defaultNamespace`"), "{e}");
    }
}
