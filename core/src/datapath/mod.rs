//! The datapath manager: loads the C programs of `bpf/`, pins their maps and links per node,
//! attaches them to pod veths, and gives typed access to maps, counters and flow events.
//!
//! Feature switches are `volatile const` globals of the C programs (`CFG_*`, see
//! `bpf/lib/config.h`) set at load time through [`DatapathConfig::switches`].

pub mod abi;
mod attach;
mod batch;
mod encrypt_maps;
mod entry_count;
mod error;
mod events;
mod host;
mod lb6_maps;
mod lb_affinity;
mod lb_maps;
mod loader;
mod maglev_map;
mod map_sizes;
mod maps;
mod pins;
mod policy_maps;
mod proxy_maps;
mod sock;
mod test_run;

pub use attach::{AttachReport, LinkState};
pub use encrypt_maps::{EncryptMap, MAP_ENCRYPT};
pub use entry_count::{MapFill, map_fill, pinned_map_fill};
pub use error::DatapathError;
pub use events::EventReader;
pub use host::{
    HOST_PROGRAM, HostDatapath, MAP_NP_NAT, MAP_NP_RNAT, host_link_pin_path, node_ipv6_switches,
};
pub use lb_affinity::{AffinityKey, AffinityMap};
pub use lb_maps::{
    LbCapacity, LbFrontend, LbMaps, MAP_LB_AFFINITY, MAP_LB_BACKENDS, MAP_LB_NAT, MAP_LB_RNAT,
    MAP_LB_SERVICES, MAP_LB_SLOTS,
};
pub use lb6_maps::{
    Lb6Capacity, Lb6Frontend, Lb6Maps, MAP_LB6_AFFINITY, MAP_LB6_BACKENDS, MAP_LB6_SERVICES,
    MAP_LB6_SLOTS,
};
pub use loader::{DEFAULT_PIN_ROOT, Datapath, DatapathConfig, PodProgram};
pub use maglev_map::{
    DEFAULT_MAGLEV_MAX_ENTRIES, DEFAULT_MAGLEV_TABLE_SIZE, MAGLEV_TABLE_SIZE_SWITCH, MAP_LB_MAGLEV,
    MaglevMaps, ensure_maglev_map,
};
pub use map_sizes::{Resized, globals, map_sizes, resize_pinned_maps};
pub use maps::{
    Conntrack, CounterSample, EndpointInfo, Endpoints, IpCache, MAP_CT, MAP_ENDPOINTS, MAP_EVENTS,
    MAP_IPCACHE, MAP_METRICS,
};
pub use pins::{BPFFS_ROOT, ensure_bpffs, node_pin_dir, remove_node_pins};
pub use policy_maps::{MAP_POLICY, MAP_POLICY_EP, PolicyMaps};
pub use proxy_maps::{MAP_PROXY_REDIR, ProxyRedirect, ProxyRedirects};
pub use sock::{MAP_LB_SKNAT, MAP_LB_SKNAT6, SocketLb, cgroup2_root, socket_link_pin_path};
pub use test_run::{TestRunOutput, test_run};
