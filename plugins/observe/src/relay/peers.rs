//! The relay's agents: where each one is, whether it answers, and a connected
//! Observer client for the ones that do. One probe task per agent connects,
//! checks it with `ServerStatus` every `probe_interval`, and reconnects after a
//! failure; every change of state is broadcast so open `GetFlows --follow`
//! streams can report it (node status events) and pick a returning agent up.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hubble_proto::observer::ServerStatusRequest;
use hubble_proto::observer::observer_client::ObserverClient;
use hubble_proto::relay::NodeState;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tracing::{info, warn};

use crate::client::HubbleAddress;
use crate::tls::ClientTls;

/// A connected agent's Observer.
pub type AgentClient = ObserverClient<Channel>;

/// An agent changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerChange {
    pub name: String,
    pub state: NodeState,
    pub message: String,
}

/// One agent as the relay sees it now.
#[derive(Debug, Clone)]
pub struct PeerView {
    pub name: String,
    pub address: HubbleAddress,
    pub state: NodeState,
    pub client: Option<AgentClient>,
}

/// The set of agents the relay serves from.
#[derive(Debug)]
pub struct PeerSet {
    peers: Mutex<BTreeMap<String, Peer>>,
    changes: broadcast::Sender<PeerChange>,
    probe_interval: Duration,
    /// TLS towards agents on TCP (none: plaintext).
    tls: Option<ClientTls>,
}

#[derive(Debug)]
struct Peer {
    address: HubbleAddress,
    state: NodeState,
    client: Option<AgentClient>,
    wake: Arc<Notify>,
    probe: JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.probe.abort();
    }
}

impl PeerSet {
    pub fn new(probe_interval: Duration) -> Arc<Self> {
        Self::with_tls(probe_interval, None)
    }

    /// A set whose connections to agents on TCP use `tls`.
    pub fn with_tls(probe_interval: Duration, tls: Option<ClientTls>) -> Arc<Self> {
        Arc::new(Self {
            peers: Mutex::new(BTreeMap::new()),
            changes: broadcast::channel(256).0,
            probe_interval,
            tls,
        })
    }

    /// The TLS settings towards agents.
    pub fn tls(&self) -> Option<&ClientTls> {
        self.tls.as_ref()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Peer>> {
        self.peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Add (or move) an agent and start probing it. Must run inside a runtime.
    pub fn add(self: &Arc<Self>, name: &str, address: HubbleAddress) {
        let mut peers = self.lock();
        if peers.get(name).is_some_and(|p| p.address == address) {
            return;
        }
        let wake = Arc::new(Notify::new());
        let probe = tokio::spawn(probe(
            Arc::downgrade(self),
            name.to_string(),
            address.clone(),
            wake.clone(),
        ));
        info!(node = name, %address, "relay: agent added");
        peers.insert(
            name.to_string(),
            Peer {
                address,
                state: NodeState::UnknownNodeState,
                client: None,
                wake,
                probe,
            },
        );
    }

    /// Forget an agent (it left the cluster): `NODE_GONE`.
    pub fn remove(&self, name: &str) {
        if self.lock().remove(name).is_some() {
            self.announce(
                name,
                NodeState::NodeGone,
                "removed from the peer list".into(),
            );
        }
    }

    /// Every agent, by name.
    pub fn all(&self) -> Vec<PeerView> {
        self.lock()
            .iter()
            .map(|(name, p)| PeerView {
                name: name.clone(),
                address: p.address.clone(),
                state: p.state,
                client: p.client.clone(),
            })
            .collect()
    }

    /// The agents that answer now, with their clients.
    pub fn connected(&self) -> Vec<(String, AgentClient)> {
        self.all()
            .into_iter()
            .filter_map(|p| p.client.map(|c| (p.name, c)))
            .collect()
    }

    /// The agents that do not answer now.
    pub fn unavailable(&self) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|p| p.client.is_none())
            .map(|p| p.name)
            .collect()
    }

    /// State changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<PeerChange> {
        self.changes.subscribe()
    }

    /// A call to `name` failed: mark it unavailable now and let its probe
    /// reconnect without waiting for the next tick.
    pub fn report_failure(&self, name: &str, message: String) {
        if let Some(wake) = self.set_state(name, None, message) {
            wake.notify_one();
        }
    }

    /// Record the agent's client (or its absence) and announce a change of state.
    /// Returns the agent's wake-up handle.
    fn set_state(
        &self,
        name: &str,
        client: Option<AgentClient>,
        message: String,
    ) -> Option<Arc<Notify>> {
        let state = if client.is_some() {
            NodeState::NodeConnected
        } else {
            NodeState::NodeUnavailable
        };
        let (changed, wake) = {
            let mut peers = self.lock();
            let peer = peers.get_mut(name)?;
            let changed = peer.state != state;
            peer.state = state;
            peer.client = client;
            (changed, peer.wake.clone())
        };
        if changed {
            self.announce(name, state, message);
        }
        Some(wake)
    }

    fn announce(&self, name: &str, state: NodeState, message: String) {
        match state {
            NodeState::NodeConnected => info!(node = name, "relay: agent connected"),
            _ => {
                warn!(node = name, state = state.as_str_name(), %message, "relay: agent not available")
            }
        }
        // Nobody listening is fine.
        let _ = self.changes.send(PeerChange {
            name: name.to_string(),
            state,
            message,
        });
    }
}

/// Keep one agent connected: connect, check it every tick, reconnect after a
/// failure. Ends when the set is dropped or the agent removed.
async fn probe(
    set: std::sync::Weak<PeerSet>,
    name: String,
    address: HubbleAddress,
    wake: Arc<Notify>,
) {
    let mut client: Option<AgentClient> = None;
    loop {
        let Some(peers) = set.upgrade() else { return };
        let interval = peers.probe_interval;
        let checked = match client.take() {
            Some(c) => check(c, interval).await,
            None => match address.observer_with(peers.tls()).await {
                Ok(c) => check(c, interval).await,
                Err(e) => Err(e.to_string()),
            },
        };
        match checked {
            Ok(c) => {
                client = Some(c.clone());
                peers.set_state(&name, Some(c), "connected".into());
            }
            Err(message) => {
                peers.set_state(&name, None, message);
            }
        }
        drop(peers);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = wake.notified() => { client = None; }
        }
    }
}

/// The agent answers `ServerStatus` within `timeout` (at least a second).
async fn check(mut client: AgentClient, timeout: Duration) -> Result<AgentClient, String> {
    let timeout = timeout.max(Duration::from_secs(1));
    match tokio::time::timeout(timeout, client.server_status(ServerStatusRequest {})).await {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(status)) => Err(format!("ServerStatus: {}", status.message())),
        Err(_) => Err(format!("ServerStatus: no answer within {timeout:?}")),
    }
}
