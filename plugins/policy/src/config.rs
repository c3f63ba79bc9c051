//! `[plugins.policy]`: network policy enforcement settings.

use porin_plugin_sdk::PluginError;
use serde::{Deserialize, Serialize};

use crate::plugin::NAME;

/// When endpoints enforce policy (Cilium's `--enable-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// Enforce on an endpoint once a policy selects it (default).
    #[default]
    Default,
    /// Enforce on every endpoint: deny unless allowed.
    Always,
    /// Never enforce: allow everything.
    Never,
}

/// The policy plugin's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// `"default"` (default), `"always"` or `"never"`.
    pub enforcement: Enforcement,
    /// Report what would be denied (verdict AUDIT) but forward it. Default: false.
    pub policy_audit_mode: bool,
    /// Port of the node's DNS proxy (on `[agent] node_ip`). Default 10053.
    pub dns_proxy_port: u16,
    /// Port of the node's HTTP proxy, where `rules.http` ports are steered. Default 10080.
    pub http_proxy_port: u16,
    /// Addresses kept per DNS name (Cilium's default, 50).
    pub fqdn_max_ips_per_name: usize,
    /// Addresses kept per endpoint. Default 1000.
    pub fqdn_max_ips_per_endpoint: usize,
    /// Shortest time, in seconds, a learned address stays (answers with a shorter TTL are
    /// raised to it). Default 3600.
    pub fqdn_min_ttl_seconds: u64,
    /// The per-node L7 HTTP proxy for `rules.http`; off when absent.
    pub l7_proxy: Option<L7ProxyConfig>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let limits = crate::fqdn::FqdnLimits::default();
        Self {
            enforcement: Enforcement::default(),
            policy_audit_mode: false,
            dns_proxy_port: crate::proxy::DEFAULT_DNS_PROXY_PORT,
            http_proxy_port: crate::proxy::DEFAULT_HTTP_PROXY_PORT,
            fqdn_max_ips_per_name: limits.max_ips_per_name,
            fqdn_max_ips_per_endpoint: limits.max_ips_per_endpoint,
            fqdn_min_ttl_seconds: limits.min_ttl.as_secs(),
            l7_proxy: None,
        }
    }
}

impl PolicyConfig {
    /// The proxy ports policy entries carry.
    pub fn proxy_ports(&self) -> crate::proxy::ProxyPorts {
        crate::proxy::ProxyPorts {
            dns: self.dns_proxy_port,
            http: self.http_proxy_port,
        }
    }

    /// The FQDN cache's limits.
    pub fn fqdn_limits(&self) -> crate::fqdn::FqdnLimits {
        crate::fqdn::FqdnLimits {
            max_ips_per_name: self.fqdn_max_ips_per_name,
            max_ips_per_endpoint: self.fqdn_max_ips_per_endpoint,
            min_ttl: std::time::Duration::from_secs(self.fqdn_min_ttl_seconds),
        }
    }
}

/// `[plugins.policy.l7_proxy]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L7ProxyConfig {
    /// Where the proxy listens in the node's network namespace. Default: the node's IP
    /// (`[agent] node_ip`) on `http_proxy_port`, where the datapath redirects `rules.http`
    /// ports.
    pub listen: Option<std::net::SocketAddr>,
    /// `NAMESPACE/POD:PORT`: send every connection there instead of its original
    /// destination (clients pointed at the proxy explicitly, e.g. for ingress rules,
    /// which the datapath does not redirect yet). Absent: the original destination the
    /// datapath recorded when it redirected the connection.
    pub static_destination: Option<String>,
}

impl PolicyConfig {
    /// Parse and validate the section (without `enabled`).
    pub fn from_section(section: &toml::Table) -> Result<Self, PluginError> {
        parse(section)
    }
}

fn parse<T: serde::de::DeserializeOwned>(section: &toml::Table) -> Result<T, PluginError> {
    porin_plugin_sdk::parse_section(NAME, section)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<PolicyConfig, PluginError> {
        PolicyConfig::from_section(&toml::from_str(text).expect("toml"))
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(parse_str("").expect("valid"), PolicyConfig::default());
        let c = parse_str("enforcement = \"always\"\npolicy_audit_mode = true").expect("valid");
        assert_eq!(c.enforcement, Enforcement::Always);
        assert!(c.policy_audit_mode);
        let c =
            parse_str("[l7_proxy]\nstatic_destination = \"payments/admin:8080\"").expect("valid");
        let proxy = c.l7_proxy.expect("proxy");
        assert_eq!(proxy.listen, None, "the node IP on http_proxy_port");
        assert_eq!(
            proxy.static_destination.as_deref(),
            Some("payments/admin:8080")
        );
    }

    #[test]
    fn invalid_values_name_key_and_value() {
        let e = parse_str("enforcement = \"sometimes\"").expect_err("invalid");
        assert_eq!(e.config_key(), Some("enforcement"));
        assert!(e.to_string().contains("`sometimes`"), "{e}");
        let e = parse_str("policy_audit_mode = 1").expect_err("invalid");
        assert_eq!(e.config_key(), Some("policy_audit_mode"));
        let e = parse_str("enforce = \"always\"").expect_err("invalid");
        assert_eq!(e.config_key(), Some("enforce"));
        let e = parse_str("[l7_proxy]\nlisten = \"nowhere\"").expect_err("invalid");
        assert!(e.to_string().contains("listen"), "{e}");
    }
}
