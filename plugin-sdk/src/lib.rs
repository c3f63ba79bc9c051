//! The boundary between Porin's core and its plugins.
//!
//! Every feature of Porin (load balancing, policy, encryption, observability) is a
//! [`Plugin`]. Core owns every kernel object and hands plugins a [`PluginContext`]:
//! typed access to pinned maps, datapath events and cluster state. Plugins declare
//! what they need from the datapath up front ([`DatapathContribution`]), so core can
//! load programs with the right load-time switches before any plugin starts.

pub mod config;
pub mod context;
pub mod datapath;
pub mod error;
pub mod flow;
pub mod health;
pub mod l7;
pub mod native;
pub mod plugin;
pub mod policy_table;
pub mod policy_validity;
pub mod state;

pub use config::{invalid_key, parse_section};
pub use context::{CidrIdentity, EndpointMeta, IpcacheWriteError, PluginContext};
pub use datapath::{
    DEFAULT_DEVICE, DatapathContribution, MAX_ENTRIES_PREFIX, Switch, TUNNEL_DEVICE_PREFIX,
};
pub use error::PluginError;
pub use flow::{DatapathEvent, Direction, EventKind, Verdict};
pub use health::Health;
pub use l7::{DnsRecord, L7Kind, L7Record};
pub use plugin::{ChangedObject, Plugin, StateChangeSummary};
pub use policy_table::{PolicyInfo, PolicyTable};
pub use policy_validity::PolicyValidity;
pub use state::{ClusterState, IdentityInfo, LocalEndpoint, PodAddress, slice_belongs_to};
