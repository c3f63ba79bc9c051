//! porin-policy: NetworkPolicy and CiliumNetworkPolicy: model, parsing, computation.

pub mod bench;
pub mod compute;
mod config;
pub mod corpus;
pub mod dns;
pub mod enforce;
pub mod fqdn;
pub mod l7;
pub mod model;
pub mod parse;
mod plugin;
pub mod proxy;
pub mod status;

pub use config::{Enforcement, L7ProxyConfig, PolicyConfig};
pub use plugin::PolicyPlugin;
