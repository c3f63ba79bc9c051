//! `[[plugins.observe.wasm]]`: one module on the flow pipeline.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What a module does on the flow pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WasmKind {
    /// Decides which flows are kept and exported.
    Filter,
    /// Adds labels to Hubble metrics.
    Labeller,
}

impl WasmKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Filter => "filter",
            Self::Labeller => "labeller",
        }
    }
}

/// What happens to flows while a module is quarantined (or never loaded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Flows pass as if the filter kept them; a labeller's labels are empty.
    #[default]
    Open,
    /// A filter drops every flow; a labeller's labels are `quarantined`.
    Closed,
}

/// WASI (preview 1) capabilities a module may be granted. Nothing else of
/// WASI exists for modules: no files, no sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WasiCapability {
    /// `fd_write` to stdout/stderr (into the agent's log), `fd_close`,
    /// `fd_seek`, `fd_fdstat_get`.
    Stdio,
    /// `clock_time_get`, `clock_res_get`.
    Clocks,
    /// `random_get`.
    Random,
    /// Empty `args_*`/`environ_*`, `proc_exit`, `sched_yield`.
    Environ,
}

impl WasiCapability {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdio => "stdio",
            Self::Clocks => "clocks",
            Self::Random => "random",
            Self::Environ => "environ",
        }
    }
}

/// Default linear memory cap per module.
pub const DEFAULT_MEMORY_MIB: u32 = 16;
/// Default wall-clock deadline per call (a call handles a batch of flows).
pub const DEFAULT_DEADLINE_MS: u32 = 20;
/// Default number of distinct values a labeller's label may take.
pub const DEFAULT_MAX_LABEL_VALUES: u32 = 100;

/// A `[[plugins.observe.wasm]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasmModuleConfig {
    /// Unique name, used in logs, metrics and `porin plugins list`.
    pub name: String,
    /// The `.wasm` file; watched, the module reloads when it changes.
    pub path: PathBuf,
    pub kind: WasmKind,
    /// Handed to the module's `init`. Default: empty.
    #[serde(default)]
    pub config: String,
    /// Default: `open`.
    #[serde(default)]
    pub fail: FailMode,
    /// Granted WASI capabilities. Default: none.
    #[serde(default)]
    pub wasi: Vec<WasiCapability>,
    /// Linear memory cap in MiB. Default: 16.
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    /// Deadline per call in milliseconds. Default: 20.
    #[serde(default = "default_deadline")]
    pub deadline_ms: u32,
    /// Labellers: distinct values per label before new ones become `other`.
    /// Default: 100.
    #[serde(default = "default_max_label_values")]
    pub max_label_values: u32,
}

fn default_memory() -> u32 {
    DEFAULT_MEMORY_MIB
}
fn default_deadline() -> u32 {
    DEFAULT_DEADLINE_MS
}
fn default_max_label_values() -> u32 {
    DEFAULT_MAX_LABEL_VALUES
}

impl WasmModuleConfig {
    /// A module with the defaults.
    pub fn new(name: &str, path: impl Into<PathBuf>, kind: WasmKind) -> Self {
        Self {
            name: name.to_string(),
            path: path.into(),
            kind,
            config: String::new(),
            fail: FailMode::Open,
            wasi: Vec::new(),
            memory_mib: DEFAULT_MEMORY_MIB,
            deadline_ms: DEFAULT_DEADLINE_MS,
            max_label_values: DEFAULT_MAX_LABEL_VALUES,
        }
    }

    /// Check the values serde cannot: `(key, message)` of the first bad one.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err((
                "name",
                format!("`{}` must be letters, digits, `-` or `_`", self.name),
            ));
        }
        if !(1..=1024).contains(&self.memory_mib) {
            return Err((
                "memory_mib",
                format!("`{}` must be between 1 and 1024", self.memory_mib),
            ));
        }
        if !(1..=1000).contains(&self.deadline_ms) {
            return Err((
                "deadline_ms",
                format!("`{}` must be between 1 and 1000", self.deadline_ms),
            ));
        }
        if !(1..=10_000).contains(&self.max_label_values) {
            return Err((
                "max_label_values",
                format!("`{}` must be between 1 and 10000", self.max_label_values),
            ));
        }
        Ok(())
    }
}
