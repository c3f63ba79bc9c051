//! porin-observe: Hubble flows from datapath events, the flow ring, the Hubble
//! API (Observer and Peer over gRPC), Hubble Relay and Hubble metrics (`hubble_*`
//! on `:9965`).

pub mod client;
pub mod compact;
mod config;
pub mod dns_names;
pub mod endpoints;
pub mod entry;
pub mod filter;
pub mod flow;
pub mod grpc;
pub mod l7_flow;
mod metric_spec;
pub mod metrics;
pub mod peer_source;
pub mod pipeline;
mod plugin;
pub mod policies;
pub mod relay;
pub mod ring;
pub mod serve;
pub mod tls;
pub mod ui;

pub use client::HubbleAddress;
pub use compact::format_compact;
pub use config::{
    DEFAULT_BUFFER_SIZE, DEFAULT_METRICS_ADDRESS, HUBBLE_SOCKET_NAME, MAX_BUFFER_SIZE,
    ObserveConfig, UiSection, WasmKind, WasmModuleConfig,
};
pub use entry::FlowEntry;
pub use grpc::HubbleService;
pub use hubble_proto;
pub use metric_spec::{CONTEXT_VALUES, LABELS_CONTEXT, METRIC_NAMES, MetricSpec, flag_options};
pub use metrics::{HubbleMetrics, LostEvents};
pub use plugin::ObservePlugin;
pub use ring::FlowRing;
pub use serve::{Listener, ServeError, agent_router, bind_unix, relay_router, serve_tcp};
pub use tls::{ClientTls, ServerTls, TlsError};
