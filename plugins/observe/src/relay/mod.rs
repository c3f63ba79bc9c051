//! Hubble Relay: one Observer API over every agent's. `porin relay` finds the
//! agents (a static list, e.g. the sandbox's nodes, and/or an agent's Peer
//! service), keeps a connection to each ([`peers`]), and answers Observer calls by
//! fanning out and combining; `GetFlows` streams are merged in time order
//! through a bounded reorder window ([`sort`]).

pub mod peers;
pub mod service;
pub mod sort;

use std::sync::Arc;
use std::time::Duration;

use hubble_proto::peer::{ChangeNotificationType, NotifyRequest};
use tracing::warn;

use crate::client::HubbleAddress;
pub use peers::{PeerChange, PeerSet, PeerView};
pub use service::{RelayService, SortOptions};

/// Hubble Relay's port.
pub const DEFAULT_RELAY_ADDRESS: &str = ":4245";

/// Follow an agent's Peer service: agents it announces are added, deleted ones
/// removed. Reconnects (every `retry`) when the Peer stream breaks. Runs until
/// dropped.
pub async fn follow_peer_service(peers: Arc<PeerSet>, address: HubbleAddress, retry: Duration) {
    loop {
        match address.peer_with(peers.tls()).await {
            Ok(mut client) => match client.notify(NotifyRequest {}).await {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(change)) => apply(&peers, &change),
                            Ok(None) => break,
                            Err(status) => {
                                warn!(%address, error = status.message(), "relay: Peer stream broke");
                                break;
                            }
                        }
                    }
                }
                Err(status) => {
                    warn!(%address, error = status.message(), "relay: Peer service refused Notify")
                }
            },
            Err(e) => warn!(error = %e, "relay: Peer service unreachable"),
        }
        tokio::time::sleep(retry).await;
    }
}

fn apply(peers: &Arc<PeerSet>, change: &hubble_proto::peer::ChangeNotification) {
    match ChangeNotificationType::try_from(change.r#type) {
        Ok(ChangeNotificationType::PeerAdded | ChangeNotificationType::PeerUpdated) => {
            peers.add(&change.name, HubbleAddress::parse(&change.address));
        }
        Ok(ChangeNotificationType::PeerDeleted) => peers.remove(&change.name),
        _ => {}
    }
}
