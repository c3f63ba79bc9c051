//! `[plugins.lb]`: kube-proxy replacement settings.

use porin_plugin_sdk::PluginError;
use serde::{Deserialize, Serialize};

use crate::plugin::NAME;

/// Maglev table sizes Cilium accepts (`--bpf-lb-maglev-table-size`): primes.
pub const MAGLEV_TABLE_SIZES: [u32; 10] = [
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
];

/// How a service picks a backend for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Uniformly random backend (default).
    #[default]
    Random,
    /// Consistent hashing with Maglev lookup tables: a backend change moves few
    /// connections.
    Maglev,
}

/// The lb plugin's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LbConfig {
    /// Serve ClusterIP, NodePort and LoadBalancer services in eBPF. Default: true.
    pub kube_proxy_replacement: bool,
    /// `"random"` (default) or `"maglev"`.
    pub algorithm: Algorithm,
    /// Maglev table size per service; one of [`MAGLEV_TABLE_SIZES`]. Default: 16381.
    pub maglev_table_size: u32,
    /// Translate service addresses at connect()/sendmsg() in cgroup socket hooks on the
    /// node's cgroup (`[agent] cgroup_path`), so pod-to-service traffic is not NATed per
    /// packet; the per-packet DNAT stays as the fallback for traffic the hooks do not see.
    /// `false` forces per-packet load balancing for everything. Default: true.
    pub socket_lb: bool,
    /// Timeout of `sessionAffinity: ClientIP`, in seconds, when the Service does
    /// not set one. Default: 10800 (Kubernetes' default).
    pub session_affinity_timeout: u64,
    /// Serve NodePort (and the nodePort of LoadBalancer) services to clients outside the
    /// cluster through `bpf/host.c` on [`LbConfig::devices`]. Default: true.
    pub nodeport: bool,
    /// External devices NodePort is served on. Default (empty): the interface holding the
    /// node IP (`[agent] node_ip`).
    pub devices: Vec<String>,
    /// `max_entries` of `porin_lb_svc` and of its IPv6 counterpart `porin_lb_svc6`:
    /// frontends (a Service port with a ClusterIP, its NodePort and each external IP are one
    /// each). Default: 262144. The other sizes below also apply to the IPv6 map of the same
    /// name with a `6` (`porin_lb_backends6`, `porin_lb_slots6`, `porin_lb_affin6`,
    /// `porin_lb_nat6`/`porin_lb_rnat6`); `porin_lb_maglev` is shared.
    pub map_max_services: u32,
    /// `max_entries` of `porin_lb_backends`: distinct backend addresses. Default: 262144.
    pub map_max_backends: u32,
    /// `max_entries` of `porin_lb_slots`: backends summed over frontends. Default: 1048576.
    pub map_max_slots: u32,
    /// `max_entries` of `porin_lb_affin`: `sessionAffinity: ClientIP` bindings
    /// (LRU). Default: 65536.
    pub map_max_affinity: u32,
    /// `max_entries` of `porin_lb_maglev`: frontends with a Maglev table. Default: 262144.
    pub map_max_maglev: u32,
    /// `max_entries` of `porin_lb_nat` and `porin_lb_rnat`: translated connections of the
    /// per-packet path (LRU). Default: 65536.
    pub map_max_nat: u32,
}

/// The largest map size accepted (16 Mi entries).
pub const MAP_MAX_ENTRIES_LIMIT: u32 = 1 << 24;

impl Default for LbConfig {
    fn default() -> Self {
        Self {
            kube_proxy_replacement: true,
            algorithm: Algorithm::Random,
            maglev_table_size: 16381,
            socket_lb: true,
            session_affinity_timeout: 10800,
            nodeport: true,
            devices: Vec::new(),
            map_max_services: 262_144,
            map_max_backends: 262_144,
            map_max_slots: 1_048_576,
            map_max_affinity: 65_536,
            map_max_maglev: 262_144,
            map_max_nat: 65_536,
        }
    }
}

impl LbConfig {
    /// Parse and validate the section (without `enabled`).
    pub fn from_section(section: &toml::Table) -> Result<Self, PluginError> {
        let config: Self = parse(section)?;
        config.validate()?;
        Ok(config)
    }

    /// (config key, value, switches) of every configurable map size: the switches are
    /// `max_entries:<map>` ([`porin_plugin_sdk::MAX_ENTRIES_PREFIX`]).
    pub fn map_sizes(&self) -> [(&'static str, u32, &'static [&'static str]); 6] {
        [
            (
                "map_max_services",
                self.map_max_services,
                &["max_entries:porin_lb_svc", "max_entries:porin_lb_svc6"],
            ),
            (
                "map_max_backends",
                self.map_max_backends,
                &[
                    "max_entries:porin_lb_backends",
                    "max_entries:porin_lb_backends6",
                ],
            ),
            (
                "map_max_slots",
                self.map_max_slots,
                &["max_entries:porin_lb_slots", "max_entries:porin_lb_slots6"],
            ),
            (
                "map_max_affinity",
                self.map_max_affinity,
                &["max_entries:porin_lb_affin", "max_entries:porin_lb_affin6"],
            ),
            (
                "map_max_maglev",
                self.map_max_maglev,
                &["max_entries:porin_lb_maglev"],
            ),
            (
                "map_max_nat",
                self.map_max_nat,
                &[
                    "max_entries:porin_lb_nat",
                    "max_entries:porin_lb_rnat",
                    "max_entries:porin_lb_nat6",
                    "max_entries:porin_lb_rnat6",
                ],
            ),
        ]
    }

    fn validate(&self) -> Result<(), PluginError> {
        for (key, value, _) in self.map_sizes() {
            if value == 0 || value > MAP_MAX_ENTRIES_LIMIT {
                return Err(invalid(
                    key,
                    format!("`{value}` is out of range (1 to {MAP_MAX_ENTRIES_LIMIT} entries)"),
                ));
            }
        }
        if !MAGLEV_TABLE_SIZES.contains(&self.maglev_table_size) {
            return Err(invalid(
                "maglev_table_size",
                format!(
                    "`{}` is not one of the allowed prime sizes {:?}",
                    self.maglev_table_size, MAGLEV_TABLE_SIZES
                ),
            ));
        }
        if self.session_affinity_timeout == 0 || self.session_affinity_timeout > 86_400 {
            return Err(invalid(
                "session_affinity_timeout",
                format!(
                    "`{}` is out of range (1 to 86400 seconds)",
                    self.session_affinity_timeout
                ),
            ));
        }
        Ok(())
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

    fn parse_str(text: &str) -> Result<LbConfig, PluginError> {
        LbConfig::from_section(&toml::from_str(text).expect("toml"))
    }

    fn err(text: &str) -> (Option<String>, String) {
        let e = parse_str(text).expect_err("invalid");
        (e.config_key().map(str::to_string), e.to_string())
    }

    #[test]
    fn defaults() {
        let c = parse_str("").expect("valid");
        assert_eq!(c, LbConfig::default());
        assert!(c.kube_proxy_replacement && c.socket_lb);
        assert_eq!(c.algorithm, Algorithm::Random);
        assert_eq!(c.maglev_table_size, 16381);
        assert_eq!(c.session_affinity_timeout, 10800);
        let c = parse_str("map_max_services = 1024\nmap_max_maglev = 512").expect("valid");
        assert_eq!((c.map_max_services, c.map_max_maglev), (1024, 512));
    }

    const MAPS_H: &str = include_str!("../../../bpf/lib/maps.h");
    /// Declares the IPv6 per-packet NAT maps (`porin_lb_nat6`, `porin_lb_rnat6`).
    const LB6_H: &str = include_str!("../../../bpf/lib/lb6.h");

    #[test]
    fn map_size_switches_name_real_maps() {
        for (_, _, switches) in LbConfig::default().map_sizes() {
            for switch in switches {
                let map = switch
                    .strip_prefix(porin_plugin_sdk::MAX_ENTRIES_PREFIX)
                    .expect("prefix");
                let declared = format!("}} {map} SEC(\".maps\")");
                assert!(
                    MAPS_H.contains(&declared) || LB6_H.contains(&declared),
                    "{map} is not in bpf/lib/maps.h or lb6.h"
                );
            }
        }
    }

    #[test]
    fn valid_maglev() {
        let c = parse_str("algorithm = \"maglev\"\nmaglev_table_size = 65521").expect("valid");
        assert_eq!(c.algorithm, Algorithm::Maglev);
    }

    #[test]
    fn invalid_values_name_key_and_value() {
        let (key, msg) = err("algorithm = \"rnd\"");
        assert_eq!(key.as_deref(), Some("algorithm"));
        assert!(
            msg.starts_with("plugins.lb: algorithm: unknown variant `rnd`"),
            "{msg}"
        );
        let (key, msg) = err("maglev_table_size = 1000");
        assert_eq!(key.as_deref(), Some("maglev_table_size"));
        assert!(msg.contains("`1000`"), "{msg}");
        let (key, msg) = err("kube_proxy_replacement = \"yes\"");
        assert_eq!(key.as_deref(), Some("kube_proxy_replacement"));
        assert!(msg.contains("\"yes\"") || msg.contains("string"), "{msg}");
        let (key, msg) = err("session_affinity_timeout = 0");
        assert_eq!(key.as_deref(), Some("session_affinity_timeout"));
        assert!(msg.contains("`0`"), "{msg}");
        let (key, msg) = err("map_max_services = 0");
        assert_eq!(key.as_deref(), Some("map_max_services"));
        assert!(msg.contains("`0` is out of range"), "{msg}");
        let (key, _) = err("map_max_nat = 100000000");
        assert_eq!(key.as_deref(), Some("map_max_nat"));
        let (key, msg) = err("algoritm = \"maglev\"");
        assert_eq!(key.as_deref(), Some("algoritm"));
        assert!(msg.contains("unknown field `algoritm`"), "{msg}");
    }
}
