//! Who is on each side of a proxied connection: identity and labels.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use porin_plugin_sdk::PluginContext;

use crate::model::Labels;

/// Cilium's reserved identity of addresses outside the cluster.
const WORLD: u32 = 2;

/// One side's identity and security labels.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedPeer {
    pub identity: u32,
    pub labels: Labels,
}

impl ResolvedPeer {
    /// `reserved:world`: an address no endpoint owns.
    pub fn world() -> Self {
        Self {
            identity: WORLD,
            labels: Labels::parse_list("reserved:world").unwrap_or_default(),
        }
    }
}

/// Resolves an address to the endpoint's identity and labels.
pub trait PeerResolver: Send + Sync {
    fn resolve(&self, ip: IpAddr) -> ResolvedPeer;
}

/// The agent's view of endpoints (every node's pods).
pub struct ContextPeers(pub Arc<dyn PluginContext>);

impl PeerResolver for ContextPeers {
    fn resolve(&self, ip: IpAddr) -> ResolvedPeer {
        match self.0.resolve_endpoint(ip) {
            Some(meta) => ResolvedPeer {
                identity: meta.identity,
                labels: Labels::parse_list(&meta.labels.join(",")).unwrap_or_default(),
            },
            None => ResolvedPeer::world(),
        }
    }
}

/// A fixed table (tests, benchmarks); other addresses are the world.
#[derive(Debug, Clone, Default)]
pub struct StaticPeers(pub HashMap<IpAddr, ResolvedPeer>);

impl PeerResolver for StaticPeers {
    fn resolve(&self, ip: IpAddr) -> ResolvedPeer {
        self.0.get(&ip).cloned().unwrap_or_else(ResolvedPeer::world)
    }
}
