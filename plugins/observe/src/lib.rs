//! porin-observe: flows from datapath events, the flow ring and socket, and the
//! configuration of Hubble metrics.

pub mod compact;
mod config;
pub mod flow;
mod metric_spec;
pub mod pipeline;
mod plugin;
pub mod ring;
pub mod server;

pub use compact::format_compact;
pub use config::{
    DEFAULT_BUFFER_SIZE, HUBBLE_SOCKET_NAME, MAX_BUFFER_SIZE, ObserveConfig, WasmKind,
    WasmModuleConfig,
};
pub use flow::Flow;
pub use metric_spec::{CONTEXT_VALUES, LABELS_CONTEXT, METRIC_NAMES, MetricSpec};
pub use plugin::ObservePlugin;
pub use ring::FlowRing;
pub use server::{FlowRequest, serve_flows};
