//! porin-observe: flows from datapath events, the flow ring and the flow socket.

pub mod compact;
pub mod flow;
pub mod pipeline;
pub mod ring;
pub mod server;

pub use compact::format_compact;
pub use flow::Flow;
pub use ring::FlowRing;
pub use server::{FlowRequest, serve_flows};
