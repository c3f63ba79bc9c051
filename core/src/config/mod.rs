//! `porin.toml`: the agent's settings and each plugin's section.
//!
//! Core validates its own part strictly (unknown keys are errors naming the key,
//! the file and the line). A plugin's section is handed raw to the plugin's
//! `configure`, minus `enabled`, which core takes. See `docs/configuration.md`.

mod agent;
mod error;
mod locate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use porin_plugin_sdk::PluginError;
use serde::Deserialize;
use tracing::debug;

pub use agent::{
    API_SOCKET_NAME, AgentConfig, DEFAULT_MAP_PRESSURE_INTERVAL_SECONDS, DEFAULT_METRICS_ADDRESS,
    DEFAULT_PIN_ROOT, DEFAULT_RUN_DIR, DEFAULT_RUNTIME_DIR, DEFAULT_STATE_ROOT, Datastore,
    NODE_NAME_ENV,
};
pub use error::ConfigError;
pub use locate::locate_key;

use agent::RawAgent;
use error::line_of_offset;

/// The built-in plugins core knows; any other `[plugins.<name>]` is an error.
pub const BUILTIN_PLUGINS: [&str; 4] = ["lb", "policy", "encryption", "observe"];

/// The whole `porin.toml`, with defaults applied.
#[derive(Debug, Clone)]
pub struct Config {
    pub agent: AgentConfig,
    /// One entry per built-in plugin (absent sections are disabled and empty).
    pub plugins: BTreeMap<&'static str, PluginSection>,
    /// `[[plugins.native]]`: out-of-tree plugins loaded from shared objects.
    pub native: Vec<NativePluginConfig>,
    source_name: String,
    text: String,
}

/// A built-in plugin's section: `enabled` (default `false`) and the rest, raw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginSection {
    pub enabled: bool,
    /// Every key but `enabled`, for the plugin's `configure`.
    pub settings: toml::Table,
}

/// A `[[plugins.native]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NativePluginConfig {
    /// Path of the shared object.
    pub path: PathBuf,
    /// Whether to run it (default `true`); `false` keeps the entry without loading it.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// `[plugins.native.settings]`: handed to the plugin's `configure`.
    #[serde(default)]
    pub settings: toml::Table,
}

fn enabled_by_default() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    agent: RawAgent,
    #[serde(default)]
    plugins: RawPlugins,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugins {
    lb: Option<toml::Table>,
    policy: Option<toml::Table>,
    encryption: Option<toml::Table>,
    observe: Option<toml::Table>,
    #[serde(default)]
    native: Vec<NativePluginConfig>,
}

impl Config {
    /// Read and parse `path`; errors name the path as given.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse `text`; `source_name` (usually the file name) prefixes error messages.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, ConfigError> {
        Self::parse_with_hostname(text, source_name, agent::hostname)
    }

    fn parse_with_hostname(
        text: &str,
        source_name: &str,
        hostname: impl FnOnce() -> String,
    ) -> Result<Self, ConfigError> {
        let raw = deserialize(text, source_name)?;
        let invalid = |section: &str, key: &str, message: String| ConfigError::Invalid {
            file: source_name.to_string(),
            line: locate_key(text, section, key),
            key: format!("{section}.{key}"),
            message,
        };

        let agent = AgentConfig::resolve(raw.agent, hostname);
        if agent.datastore == Datastore::Local {
            if agent.pod_cidr.is_none() {
                return Err(invalid(
                    "agent",
                    "datastore",
                    "`pod_cidr` is required with datastore = \"local\"".to_string(),
                ));
            }
            if agent.manifests.is_empty() {
                return Err(invalid(
                    "agent",
                    "datastore",
                    "`manifests` is required with datastore = \"local\"".to_string(),
                ));
            }
        }
        if let Some(cidr) = agent.pod_cidr {
            if cidr != cidr.trunc() {
                return Err(invalid(
                    "agent",
                    "pod_cidr",
                    format!(
                        "`{cidr}` has host bits set; did you mean `{}`?",
                        cidr.trunc()
                    ),
                ));
            }
            if cidr.prefix_len() > 30 {
                return Err(invalid(
                    "agent",
                    "pod_cidr",
                    format!("`{cidr}` is too small for pods (at most /30)"),
                ));
            }
        }

        if agent.enable_ipv6 {
            let Some(cidr6) = agent.pod_cidr_v6 else {
                return Err(invalid(
                    "agent",
                    "enable_ipv6",
                    "`pod_cidr_v6` is required with enable_ipv6 = true".to_string(),
                ));
            };
            if cidr6 != cidr6.trunc() {
                return Err(invalid(
                    "agent",
                    "pod_cidr_v6",
                    format!(
                        "`{cidr6}` has host bits set; did you mean `{}`?",
                        cidr6.trunc()
                    ),
                ));
            }
            // A pod's IPv6 address carries the host part of its IPv4 one.
            let v4_host_bits = 32 - agent.pod_cidr.map_or(0, |c| c.prefix_len());
            if u32::from(128 - cidr6.prefix_len()) < u32::from(v4_host_bits) {
                return Err(invalid(
                    "agent",
                    "pod_cidr_v6",
                    format!(
                        "`{cidr6}` has fewer host bits than the IPv4 pod CIDR ({v4_host_bits}); use a /64"
                    ),
                ));
            }
        }

        let mut plugins = BTreeMap::new();
        let sections = [
            ("lb", raw.plugins.lb),
            ("policy", raw.plugins.policy),
            ("encryption", raw.plugins.encryption),
            ("observe", raw.plugins.observe),
        ];
        for (name, table) in sections {
            let mut settings = table.unwrap_or_default();
            let enabled = match settings.remove("enabled") {
                None => false,
                Some(toml::Value::Boolean(b)) => b,
                Some(other) => {
                    return Err(invalid(
                        &format!("plugins.{name}"),
                        "enabled",
                        format!("expected a boolean, found {} `{other}`", other.type_str()),
                    ));
                }
            };
            debug!(plugin = name, enabled, "plugin section read");
            plugins.insert(name, PluginSection { enabled, settings });
        }

        Ok(Self {
            agent,
            plugins,
            native: raw.plugins.native,
            source_name: source_name.to_string(),
            text: text.to_string(),
        })
    }

    /// The section of a built-in plugin.
    pub fn plugin(&self, name: &str) -> Option<&PluginSection> {
        self.plugins.get(name)
    }

    /// Turn a plugin's `configure` error into a located [`ConfigError`]:
    /// `porin.toml:12: plugins.lb: unknown field ...`.
    pub fn plugin_error(&self, err: &PluginError) -> ConfigError {
        plugin_error(&self.text, &self.source_name, err)
    }
}

/// Locate a plugin's configuration error in `text` (see [`Config::plugin_error`]).
pub fn plugin_error(text: &str, source_name: &str, err: &PluginError) -> ConfigError {
    match err {
        PluginError::Config {
            plugin,
            key,
            message,
        } => {
            let section = format!("plugins.{plugin}");
            let line = key
                .as_deref()
                .and_then(|k| locate_key(text, &section, k))
                .or_else(|| locate_key(text, "plugins", plugin));
            ConfigError::Invalid {
                file: source_name.to_string(),
                line,
                key: section,
                message: message.clone(),
            }
        }
        other => ConfigError::Invalid {
            file: source_name.to_string(),
            line: None,
            key: String::new(),
            message: other.to_string(),
        },
    }
}

/// Deserialize with the path of the failing key and toml's span.
fn deserialize(text: &str, source_name: &str) -> Result<RawFile, ConfigError> {
    let located = |err: &toml::de::Error, key: String| ConfigError::Invalid {
        file: source_name.to_string(),
        line: err.span().map(|s| line_of_offset(text, s.start)),
        key,
        message: err.message().trim().to_string(),
    };
    let deserializer =
        toml::de::Deserializer::parse(text).map_err(|e| located(&e, String::new()))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let key = if path == "." { String::new() } else { path };
        located(e.inner(), key)
    })
}

#[cfg(test)]
mod tests;
