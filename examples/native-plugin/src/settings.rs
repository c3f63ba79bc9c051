//! The exporter's `[plugins.native.settings]`.

use std::path::PathBuf;

use porin_plugin_sdk::{DatapathEvent, PluginError, Verdict};
use serde::Deserialize;

pub const NAME: &str = "flow-exporter";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// File the JSON lines are appended to.
    pub output: Option<PathBuf>,
    /// Only flows with this verdict.
    pub verdict: Option<Verdict>,
    /// Only these protocols (`tcp`, `udp`, `icmp`).
    #[serde(default)]
    pub protocols: Vec<String>,
}

impl Settings {
    pub fn parse(section: &toml::Table) -> Result<Self, PluginError> {
        let settings: Self = porin_plugin_sdk::parse_section(NAME, section)?;
        if settings.output.is_none() {
            return Err(PluginError::Config {
                plugin: NAME.to_string(),
                key: Some("output".to_string()),
                message: "`output` (the file flows are written to) is required".to_string(),
            });
        }
        for p in &settings.protocols {
            if protocol_number(p).is_none() {
                return Err(PluginError::Config {
                    plugin: NAME.to_string(),
                    key: Some("protocols".to_string()),
                    message: format!("unknown protocol `{p}` (tcp, udp, icmp)"),
                });
            }
        }
        Ok(settings)
    }

    /// Whether `event` is exported.
    pub fn selects(&self, event: &DatapathEvent) -> bool {
        self.verdict.is_none_or(|v| v == event.verdict)
            && (self.protocols.is_empty()
                || self
                    .protocols
                    .iter()
                    .filter_map(|p| protocol_number(p))
                    .any(|n| n == event.protocol || (n == 1 && event.protocol == 58)))
    }
}

fn protocol_number(name: &str) -> Option<u8> {
    match name {
        "tcp" => Some(6),
        "udp" => Some(17),
        "icmp" => Some(1),
        _ => None,
    }
}
