//! Which agents the agent's Peer service announces: every Node that publishes
//! where its Hubble API listens (the annotation below, which each observe plugin
//! adds to its own Node), so a relay pointed at one agent finds all of them.

use std::collections::BTreeMap;
use std::sync::Arc;

use porin_plugin_sdk::PluginContext;

/// The Node annotation holding the node's Hubble API address (`unix:///...` or
/// `host:port`).
pub const HUBBLE_ADDRESS_ANNOTATION: &str = "network.porin.io/hubble-address";

/// The agents to announce now, name to address.
pub type PeerSource = Arc<dyn Fn() -> BTreeMap<String, String> + Send + Sync>;

/// The cluster's Nodes that carry [`HUBBLE_ADDRESS_ANNOTATION`].
pub fn cluster_peers(ctx: Arc<dyn PluginContext>) -> PeerSource {
    Arc::new(move || {
        ctx.state()
            .nodes()
            .into_iter()
            .filter_map(|node| {
                let name = node.metadata.name?;
                let address = node
                    .metadata
                    .annotations?
                    .remove(HUBBLE_ADDRESS_ANNOTATION)?;
                Some((name, address))
            })
            .collect()
    })
}
