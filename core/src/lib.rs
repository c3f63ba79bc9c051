//! core

pub mod state;
