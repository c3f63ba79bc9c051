//! porin-observe: flows, Hubble API, Hubble metrics, WASM filters and labellers.

mod config;
mod metric_spec;
mod plugin;

pub use config::{
    DEFAULT_BUFFER_SIZE, HUBBLE_SOCKET_NAME, MAX_BUFFER_SIZE, ObserveConfig, WasmKind,
    WasmModuleConfig,
};
pub use metric_spec::{CONTEXT_VALUES, LABELS_CONTEXT, METRIC_NAMES, MetricSpec};
pub use plugin::ObservePlugin;
