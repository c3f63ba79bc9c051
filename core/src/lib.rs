//! Porin's core: configuration, the plugin manager, the datapath manager, the
//! state store and its datastores, endpoints, identities, the ipcache, the
//! agent's API and metrics. Plugins build on it through `porin-plugin-sdk`.

pub mod agent;
pub mod api;
pub mod config;
pub mod datapath;
pub mod endpoint;
pub mod identity;
pub mod ipam;
pub mod ipam_v6;
pub mod ipcache;
pub mod metrics;
pub mod plugins;
pub mod state;
