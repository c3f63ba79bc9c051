//! The agent's local API: HTTP/1.1 with JSON bodies on a unix socket (mode 0600).
//!
//! The CLI (`porin status`, `porin endpoint list`, ...) and the sandbox (in place of
//! a CNI plugin) talk to it. `curl --unix-socket /var/run/porin/<node>/agent.sock
//! http://agent/v1/status` works too.

pub mod client;
pub mod error;
pub mod server;
pub mod types;

pub use client::AgentClient;
pub use error::ApiError;
pub use server::{AgentApi, serve_api};
pub use types::*;
