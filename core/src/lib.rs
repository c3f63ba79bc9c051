//! core
pub mod config;
pub mod identity;
pub mod ipam;
pub mod ipcache;
pub mod metrics;
