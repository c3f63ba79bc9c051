//! porin-policy: NetworkPolicy and CiliumNetworkPolicy.

mod config;
mod plugin;

pub use config::{Enforcement, PolicyConfig};
pub use plugin::PolicyPlugin;
