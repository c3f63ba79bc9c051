//! porin-lb: kube-proxy replacement.

mod config;
mod cpu_time;
pub mod datapath_maps;
pub mod desired;
pub mod desired6;
pub mod desired6_nodeport;
pub mod desired6_semantics;
mod maglev;
mod plugin;
pub mod programmer;
pub mod programmer6;

pub use config::{Algorithm, LbConfig, MAGLEV_TABLE_SIZES};
pub use maglev::{MaglevError, backend_table, maglev_table};
pub use plugin::LbPlugin;
