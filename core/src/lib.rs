//! core
pub mod api;
