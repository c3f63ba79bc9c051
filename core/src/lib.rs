//! core
pub mod datapath;
