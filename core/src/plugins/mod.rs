//! The plugin manager: configures, starts, reconciles and stops plugins, and keeps
//! each one's health. A plugin that fails (error or panic) is marked failed; the
//! agent and the other plugins go on.

mod manager;
pub mod native;

pub use manager::{PluginManager, PluginSection};
