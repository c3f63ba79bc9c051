//! Porin's testbed: nodes and pods made of network namespaces, for tests,
//! benchmarks and `porin sandbox`.
//!
//! Everything here needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN), iproute2 and
//! a cgroup2 mount. Objects are RAII (dropped means removed) and, when a
//! state file is given, recorded as they are made so [`sweep::sweep`] can
//! remove them after a crash.

pub mod bench;
pub mod cgroup;
pub mod cmd;
pub mod icmp;
pub mod link;
pub mod manifests;
pub mod names;
pub mod native_plugins;
pub mod netns;
pub mod placement;
pub mod pod;
pub mod process;
pub mod sandbox;
pub mod state;
pub mod sweep;
pub mod topology;
pub mod wasm_guests;

pub use cgroup::Cgroup;
pub use link::Ip;
pub use netns::NetNs;
pub use pod::Pod;
pub use process::Process;
pub use sandbox::{AgentControl, NodeSpec, PodSpec, Sandbox, SandboxOptions, SandboxSummary};
pub use state::{State, StateFile};
pub use sweep::{SweepReport, sweep, sweep_prefix};
pub use topology::{Cluster, ClusterBuilder, ExternalClient, Node};
