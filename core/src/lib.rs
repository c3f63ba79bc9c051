//! core
pub mod api;
pub mod plugins;
