//! The per-node L7 HTTP proxy (Cilium's Envoy role for `rules.http`).
//!
//! One proxy per node serves every endpoint: the datapath steers connections
//! of ports with HTTP rules to its listener, and the proxy learns each
//! connection's original destination through [`OriginalDestination`] (the
//! datapath's record; tests and benches use [`FixedDestination`]). For each
//! connection it resolves both peers to identities and labels
//! ([`PeerResolver`]), computes the HTTP rules that apply
//! ([`crate::compute::ConnectionFilter`]) and then, per request, forwards a
//! match to the original destination over pooled keep-alive connections or
//! answers `403 Access denied` as Cilium does. Every request and response is
//! published as an [`porin_plugin_sdk::L7Record`] for the flow pipeline.

mod error;
mod local_delivery;
mod marked_connector;
mod named_ports;
mod original_dst;
mod peers;
mod policy_set;
mod proxy;
mod record;

pub use error::L7ProxyError;
pub use local_delivery::{LocalDeliveryError, install_local_delivery};
pub use marked_connector::{MARK_FROM_INGRESS_PROXY, MarkedConnector};
pub use named_ports::{NamedPortView, container_ports};
pub use original_dst::{
    FixedDestination, OriginalDestination, OriginalDestinationError, PodDestination,
};
pub use peers::{ContextPeers, PeerResolver, ResolvedPeer, StaticPeers};
pub use policy_set::{PolicySet, SharedPolicies};
pub use proxy::{ACCESS_DENIED_BODY, L7Proxy, RunningProxy};
pub use record::{L7Sink, trace_id_of};
