//! The node proxies' ports, which policy entries with L7 rules carry to the datapath.

use serde::{Deserialize, Serialize};

use crate::model::PortRule;

/// Default port of the DNS proxy (`[plugins.policy] dns_proxy_port`).
pub const DEFAULT_DNS_PROXY_PORT: u16 = 10053;
/// Default port of the HTTP proxy (`[plugins.policy] http_proxy_port`).
pub const DEFAULT_HTTP_PROXY_PORT: u16 = 10080;

/// Where the node's proxies listen (on the node IP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyPorts {
    pub dns: u16,
    pub http: u16,
}

impl Default for ProxyPorts {
    fn default() -> Self {
        Self {
            dns: DEFAULT_DNS_PROXY_PORT,
            http: DEFAULT_HTTP_PROXY_PORT,
        }
    }
}

impl ProxyPorts {
    /// The proxy a `toPorts` entry's L7 rules send its connections to (0: none). DNS
    /// rules win over HTTP rules (a port has one kind of traffic).
    pub fn for_port_rule(&self, rule: &PortRule) -> u16 {
        if !rule.l7.dns.is_empty() {
            self.dns
        } else if !rule.l7.http.is_empty() {
            self.http
        } else {
            0
        }
    }
}
