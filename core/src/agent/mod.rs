//! The agent: wires configuration, datapath, state, endpoints, plugins and APIs.
//!
//! Start-up order matters for restarts without disruption: the datapath is loaded
//! first (reusing pinned maps), then endpoints recorded by the previous run are
//! restored (their pinned links get the new programs atomically), and only then
//! does anything that could change traffic run.

mod api_impl;
mod cluster;
mod context;
mod devices;
mod endpoints;
mod error;
mod map_pressure;
mod node_status;
mod policy_status;
mod reload;
mod run;
mod state_view;
mod toggle;

pub use api_impl::to_sdk_event;
pub use endpoints::{EndpointManager, EndpointRecord};
pub use error::AgentError;
pub use run::{EVENT_CHANNEL_CAPACITY, run};
