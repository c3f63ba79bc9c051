//! `[plugins.encryption]`: transparent encryption between nodes.

use porin_plugin_sdk::PluginError;
use serde::{Deserialize, Serialize};

use crate::plugin::NAME;

/// Encryption protocol; only WireGuard is supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionType {
    #[default]
    Wireguard,
}

/// Which userspace WireGuard implementation runs the device (this kernel has no
/// WireGuard module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Userspace {
    /// Porin's own device (`porin wireguard`, gotatun): the default.
    #[default]
    Porin,
    /// Debian's `wireguard-go`.
    WireguardGo,
}

impl Userspace {
    /// The name `porin encrypt status` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Porin => "porin",
            Self::WireguardGo => "wireguard-go",
        }
    }
}

/// The encryption plugin's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncryptionConfig {
    /// `"wireguard"` (default and only value).
    #[serde(rename = "type")]
    pub kind: EncryptionType,
    /// Drop pod-to-pod traffic between nodes that would leave unencrypted
    /// (Cilium's strict mode). Default: false.
    pub strict_mode: bool,
    /// WireGuard UDP port. Default: 51871 (Cilium's).
    pub listen_port: u16,
    /// MTU of the WireGuard device, 1280 to 9000. Default: unset, derived from the
    /// underlay device's MTU minus WireGuard's 80-byte overhead.
    pub mtu: Option<u32>,
    /// The userspace implementation: `"porin"` (default) or `"wireguard-go"`.
    pub userspace: Userspace,
}

impl Default for EncryptionConfig {
    fn default() -> Self {
        Self {
            kind: EncryptionType::Wireguard,
            strict_mode: false,
            listen_port: 51871,
            mtu: None,
            userspace: Userspace::Porin,
        }
    }
}

impl EncryptionConfig {
    /// Parse and validate the section (without `enabled`).
    pub fn from_section(section: &toml::Table) -> Result<Self, PluginError> {
        let config: Self = parse(section)?;
        if config.listen_port == 0 {
            return Err(invalid(
                "listen_port",
                "`0` is not a valid port".to_string(),
            ));
        }
        if let Some(mtu) = config.mtu
            && !(1280..=9000).contains(&mtu)
        {
            return Err(invalid(
                "mtu",
                format!("`{mtu}` is out of range (1280 to 9000)"),
            ));
        }
        Ok(config)
    }
}

fn parse<T: serde::de::DeserializeOwned>(section: &toml::Table) -> Result<T, PluginError> {
    porin_plugin_sdk::parse_section(NAME, section)
}

fn invalid(key: &str, message: String) -> PluginError {
    porin_plugin_sdk::config::invalid_key(NAME, key, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<EncryptionConfig, PluginError> {
        EncryptionConfig::from_section(&toml::from_str(text).expect("toml"))
    }

    #[test]
    fn defaults() {
        let c = parse_str("").expect("valid");
        assert_eq!(c, EncryptionConfig::default());
        assert_eq!(c.listen_port, 51871);
        let c = parse_str("type = \"wireguard\"\nstrict_mode = true\nmtu = 1420").expect("valid");
        assert!(c.strict_mode);
        assert_eq!(c.mtu, Some(1420));
        assert_eq!(c.userspace, Userspace::Porin);
        let c = parse_str("userspace = \"wireguard-go\"").expect("valid");
        assert_eq!(c.userspace, Userspace::WireguardGo);
    }

    #[test]
    fn invalid_values_name_key_and_value() {
        for (text, key, value) in [
            ("type = \"ipsec\"", "type", "`ipsec`"),
            ("listen_port = 0", "listen_port", "`0`"),
            ("listen_port = 70000", "listen_port", "70000"),
            ("mtu = 100", "mtu", "`100`"),
            ("strict_mode = \"on\"", "strict_mode", "on"),
            ("port = 1", "port", "`port`"),
            ("userspace = \"boringtun\"", "userspace", "`boringtun`"),
        ] {
            let e = parse_str(text).expect_err(text);
            assert_eq!(e.config_key(), Some(key), "{text}: {e}");
            assert!(e.to_string().contains(value), "{text}: {e}");
        }
    }
}
