//! Porin's core: configuration, the plugin manager, the datapath manager, the
//! state store and its datastores, endpoints, identities, the ipcache, the
//! agent's API and metrics. Plugins build on it through `porin-plugin-sdk`.

pub mod agent;
pub mod api;
pub mod endpoint;
pub mod plugins;
pub mod state;
