//! `[plugins.observe]`: flows, Hubble API and Hubble metrics.

use std::net::SocketAddr;
use std::path::PathBuf;

use porin_plugin_sdk::PluginError;
use serde::{Deserialize, Serialize};

use crate::MetricSpec;
use crate::plugin::NAME;
use crate::tls::ServerTls;

/// Hubble socket file name inside the agent's `run_dir`.
pub const HUBBLE_SOCKET_NAME: &str = "hubble.sock";

pub use porin_wasm::{WasmKind, WasmModuleConfig};

/// The section as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawObserveConfig {
    buffer_size: u32,
    metrics: Vec<String>,
    wasm: Vec<WasmModuleConfig>,
    socket_path: Option<PathBuf>,
    listen_address: Option<String>,
    tls: Option<ServerTls>,
    metrics_address: String,
    deleted_pod_metrics_after_s: u64,
    ui: Option<UiSection>,
}

/// `[plugins.observe.ui]`: the Flow UI served by the agent itself (docs/ui.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UiSection {
    /// Where the page is served: `[host]:port`, `:port` for every address.
    pub listen: String,
}

impl Default for RawObserveConfig {
    fn default() -> Self {
        Self {
            buffer_size: DEFAULT_BUFFER_SIZE,
            metrics: Vec::new(),
            wasm: Vec::new(),
            socket_path: None,
            listen_address: None,
            tls: None,
            metrics_address: DEFAULT_METRICS_ADDRESS.to_string(),
            deleted_pod_metrics_after_s: DEFAULT_DELETED_POD_METRICS_AFTER_S,
            ui: None,
        }
    }
}

/// Seconds a deleted pod's metric series stay (Cilium removes them after a minute).
pub const DEFAULT_DELETED_POD_METRICS_AFTER_S: u64 = 60;

/// Where Hubble metrics are served by default (Cilium's port).
pub const DEFAULT_METRICS_ADDRESS: &str = "0.0.0.0:9965";

/// Default flow ring size.
pub const DEFAULT_BUFFER_SIZE: u32 = 4096;
/// Largest flow ring size (Cilium's limit, rounded up to a power of two).
pub const MAX_BUFFER_SIZE: u32 = 65536;

/// The observe plugin's settings, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObserveConfig {
    /// Flows kept in the ring for `GetFlows`; a power of two up to 65536.
    /// Default: 4096.
    pub buffer_size: u32,
    /// Hubble metrics on `:9965`, in Cilium's option syntax. Default: none.
    pub metrics: Vec<MetricSpec>,
    /// WASM filters and labellers, in pipeline order. Default: none.
    pub wasm: Vec<WasmModuleConfig>,
    /// The Hubble API socket. Default: `<run_dir>/hubble.sock` (see
    /// [`ObserveConfig::socket_path_in`]).
    pub socket_path: Option<PathBuf>,
    /// Also serve the Hubble API on TCP, e.g. `":4244"`. Default: unset.
    pub listen_address: Option<String>,
    /// TLS on `listen_address` (`[plugins.observe.tls]`: `cert_file`, `key_file`,
    /// `client_ca_files` for mutual TLS). Default: plaintext.
    pub tls: Option<ServerTls>,
    /// Where `/metrics` is served when `metrics` is not empty; `":9965"` means
    /// every address. Default: `0.0.0.0:9965`.
    pub metrics_address: SocketAddr,
    /// Series of metrics whose labels name a pod (`pod`, `pod-name`, `ip` contexts,
    /// `source_pod`/`source_ip`-style `labelsContext`) are removed this many seconds
    /// after the pod is deleted; 1 to 86400. Default: 60.
    pub deleted_pod_metrics_after_s: u64,
    /// `[plugins.observe.ui] listen`: serve the Flow UI over this agent's flows.
    /// Default: off (the relay's `--ui` serves the whole cluster).
    pub ui: Option<UiSection>,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        Self {
            buffer_size: DEFAULT_BUFFER_SIZE,
            metrics: Vec::new(),
            wasm: Vec::new(),
            socket_path: None,
            listen_address: None,
            tls: None,
            metrics_address: SocketAddr::from(([0, 0, 0, 0], 9965)),
            deleted_pod_metrics_after_s: DEFAULT_DELETED_POD_METRICS_AFTER_S,
            ui: None,
        }
    }
}

impl ObserveConfig {
    /// Parse and validate the section (without `enabled`).
    pub fn from_section(section: &toml::Table) -> Result<Self, PluginError> {
        let raw: RawObserveConfig = parse(section)?;
        let size = raw.buffer_size;
        if !size.is_power_of_two() || size > MAX_BUFFER_SIZE {
            return Err(invalid(
                "buffer_size",
                format!("`{size}` must be a power of two up to {MAX_BUFFER_SIZE}"),
            ));
        }
        let metrics = raw
            .metrics
            .iter()
            .enumerate()
            .map(|(i, m)| {
                MetricSpec::parse(m).map_err(|msg| invalid(&format!("metrics[{i}]"), msg))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (i, m) in raw.wasm.iter().enumerate() {
            if raw.wasm[..i].iter().any(|o| o.name == m.name) {
                return Err(invalid(
                    &format!("wasm[{i}].name"),
                    format!("`{}` is used by another module", m.name),
                ));
            }
            m.validate()
                .map_err(|(key, message)| invalid(&format!("wasm[{i}].{key}"), message))?;
        }
        if let Some(addr) = &raw.listen_address {
            let port = addr.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
            if !matches!(port, Some(Ok(p)) if p != 0) {
                return Err(invalid(
                    "listen_address",
                    format!("`{addr}` is not `[host]:port`"),
                ));
            }
        }
        if let Some(tls) = &raw.tls {
            if raw.listen_address.is_none() {
                return Err(invalid(
                    "tls",
                    "TLS applies to the TCP listener: set `listen_address` too".to_string(),
                ));
            }
            // Read the files now: a bad path fails the configuration, not the listener.
            tls.config().map_err(|e| invalid("tls", e.to_string()))?;
        }
        let metrics_address = socket_addr(&raw.metrics_address).ok_or_else(|| {
            invalid(
                "metrics_address",
                format!("`{}` is not `[host]:port`", raw.metrics_address),
            )
        })?;
        let after = raw.deleted_pod_metrics_after_s;
        if !(1..=86_400).contains(&after) {
            return Err(invalid(
                "deleted_pod_metrics_after_s",
                format!("`{after}` must be between 1 and 86400 seconds"),
            ));
        }
        if let Some(ui) = &raw.ui
            && socket_addr(&ui.listen).is_none()
        {
            return Err(invalid(
                "ui.listen",
                format!("`{}` is not `[host]:port`", ui.listen),
            ));
        }
        Ok(Self {
            metrics_address,
            deleted_pod_metrics_after_s: after,
            ui: raw.ui,
            buffer_size: size,
            metrics,
            wasm: raw.wasm,
            socket_path: raw.socket_path,
            listen_address: raw.listen_address,
            tls: raw.tls,
        })
    }

    /// The Hubble socket, given the agent's `run_dir`.
    pub fn socket_path_in(&self, run_dir: &std::path::Path) -> PathBuf {
        self.socket_path
            .clone()
            .unwrap_or_else(|| run_dir.join(HUBBLE_SOCKET_NAME))
    }
}

/// `host:port`, or `:port` for every IPv4 address (Cilium's `:9965`).
fn socket_addr(text: &str) -> Option<SocketAddr> {
    match text.strip_prefix(':') {
        Some(port) => Some(SocketAddr::from(([0, 0, 0, 0], port.parse().ok()?))),
        None => text.parse().ok(),
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
    use std::path::Path;

    use super::*;

    fn parse_str(text: &str) -> Result<ObserveConfig, PluginError> {
        ObserveConfig::from_section(&toml::from_str(text).expect("toml"))
    }

    #[test]
    fn defaults() {
        let c = parse_str("").expect("valid");
        assert_eq!(c, ObserveConfig::default());
        assert_eq!(c.buffer_size, 4096);
        assert_eq!(c.metrics_address.to_string(), DEFAULT_METRICS_ADDRESS);
        assert_eq!(
            c.socket_path_in(Path::new("/var/run/porin")),
            PathBuf::from("/var/run/porin/hubble.sock")
        );
    }

    #[test]
    fn full_section() {
        let c = parse_str(
            r#"
buffer_size = 8192
metrics = ["dns", "drop", "httpV2:exemplars=true;labelsContext=source_namespace"]
listen_address = ":4244"
metrics_address = ":9000"
[[wasm]]
name = "drop-health-checks"
path = "/etc/porin/filters/drop_health.wasm"
kind = "filter"
config = "8080"
[[wasm]]
name = "teams"
path = "/etc/porin/filters/teams.wasm"
kind = "labeller"
fail = "closed"
wasi = ["stdio", "clocks"]
memory_mib = 32
deadline_ms = 5
max_label_values = 50
"#,
        )
        .expect("valid");
        assert_eq!(c.metrics.len(), 3);
        assert_eq!(c.wasm[0].kind, WasmKind::Filter);
        assert_eq!(c.wasm[0].config, "8080");
        assert_eq!(
            c.wasm[0].deadline_ms,
            porin_wasm::config::DEFAULT_DEADLINE_MS
        );
        let teams = &c.wasm[1];
        assert_eq!(teams.kind, WasmKind::Labeller);
        assert_eq!(teams.fail, porin_wasm::FailMode::Closed);
        assert_eq!(
            teams.wasi,
            vec![
                porin_wasm::WasiCapability::Stdio,
                porin_wasm::WasiCapability::Clocks
            ]
        );
        assert_eq!(
            (teams.memory_mib, teams.deadline_ms, teams.max_label_values),
            (32, 5, 50)
        );
        assert_eq!(c.listen_address.as_deref(), Some(":4244"));
        assert_eq!(c.metrics_address.to_string(), "0.0.0.0:9000");
        let ui = parse_str("[ui]\nlisten = \":12000\"").expect("valid");
        assert_eq!(ui.ui.map(|u| u.listen).as_deref(), Some(":12000"));
    }

    #[test]
    fn invalid_values_name_key_and_value() {
        for (text, key, value) in [
            ("buffer_size = 4095", "buffer_size", "`4095`"),
            ("buffer_size = 131072", "buffer_size", "`131072`"),
            ("metrics = [\"dns\", \"dnss\"]", "metrics[1]", "`dnss`"),
            ("metrics = [\"dns:foo=1\"]", "metrics[0]", "`foo`"),
            ("listen_address = \"4244\"", "listen_address", "`4244`"),
            ("metrics_address = \"9965\"", "metrics_address", "`9965`"),
            ("[ui]\nlisten = \"12000\"", "ui.listen", "`12000`"),
            ("[ui]\nlisten = \":12000\"\nport = 1", "ui.port", "`port`"),
            (
                "[tls]\ncert_file = \"/a.pem\"\nkey_file = \"/a.key\"",
                "tls",
                "`listen_address`",
            ),
            (
                "listen_address = \":4244\"\n[tls]\ncert_file = \"/no/such.pem\"\nkey_file = \"/a.key\"",
                "tls",
                "/no/such.pem",
            ),
            (
                "[[wasm]]\nname = \"a\"\npath = \"/a\"\nkind = \"filtre\"",
                "wasm[0].kind",
                "`filtre`",
            ),
            (
                "[[wasm]]\nname = \"a\"\npath = \"/a\"\nkind = \"filter\"\nsize = 1",
                "wasm[0].size",
                "`size`",
            ),
            (
                "[[wasm]]\nname = \"a\"\npath = \"/a\"\nkind = \"filter\"\nfail = \"ajar\"",
                "wasm[0].fail",
                "`ajar`",
            ),
            (
                "[[wasm]]\nname = \"a\"\npath = \"/a\"\nkind = \"filter\"\nwasi = [\"files\"]",
                "wasm[0].wasi[0]",
                "`files`",
            ),
            (
                "[[wasm]]\nname = \"a\"\npath = \"/a\"\nkind = \"filter\"\ndeadline_ms = 0",
                "wasm[0].deadline_ms",
                "`0`",
            ),
            (
                "[[wasm]]\nname = \"a b\"\npath = \"/a\"\nkind = \"filter\"",
                "wasm[0].name",
                "`a b`",
            ),
            ("buffer = 1", "buffer", "`buffer`"),
        ] {
            let e = parse_str(text).expect_err(text);
            assert_eq!(e.config_key(), Some(key), "{text}: {e}");
            assert!(e.to_string().contains(value), "{text}: {e}");
        }
    }
}
