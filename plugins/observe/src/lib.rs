//! porin-observe: Hubble flows from datapath events, the flow ring, the Hubble
//! API (Observer and Peer over gRPC) and the configuration of Hubble metrics.

pub mod compact;
mod config;
pub mod filter;
pub mod flow;
pub mod grpc;
mod metric_spec;
pub mod pipeline;
mod plugin;
pub mod ring;
pub mod serve;

pub use compact::format_compact;
pub use config::{
    DEFAULT_BUFFER_SIZE, HUBBLE_SOCKET_NAME, MAX_BUFFER_SIZE, ObserveConfig, WasmKind,
    WasmModuleConfig,
};
pub use grpc::HubbleService;
pub use hubble_proto;
pub use metric_spec::{CONTEXT_VALUES, LABELS_CONTEXT, METRIC_NAMES, MetricSpec};
pub use plugin::ObservePlugin;
pub use ring::FlowRing;
pub use serve::{ServeError, bind_unix, serve_tcp};
