//! The encryption plugin's metrics on the agent metrics endpoint: peers, handshakes,
//! bytes per peer node, errors by reason, and device restarts. The supervisor feeds them
//! from `wg show <dev> dump` every second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::dump::DeviceDump;

/// Why something failed, the `reason` label of `porin_wireguard_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorReason {
    /// The device process is not running or does not answer.
    DeviceDown,
    /// Peers or routes could not be applied.
    Configure,
    /// The datapath map of remote pod CIDRs -> WireGuard device could not be written.
    TunnelMap,
    /// `wg show dump` failed or could not be parsed.
    Status,
}

impl ErrorReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::DeviceDown => "device_down",
            Self::Configure => "configure",
            Self::TunnelMap => "tunnel_map",
            Self::Status => "status",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PeerLabels {
    node: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// Last seen dump values of one peer (counters in the dump restart with the device).
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    handshake: Option<u64>,
    rx: u64,
    tx: u64,
}

/// Handles on the plugin's metrics; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct WgMetrics {
    peers: Gauge,
    handshakes: Family<PeerLabels, Counter>,
    handshake_age: Family<PeerLabels, Gauge>,
    rx_bytes: Family<PeerLabels, Counter>,
    tx_bytes: Family<PeerLabels, Counter>,
    errors: Family<ReasonLabels, Counter>,
    restarts: Counter,
    seen: Arc<Mutex<HashMap<String, Seen>>>,
}

impl WgMetrics {
    /// Register every metric into `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "porin_wireguard_peers",
            "WireGuard peers (other nodes) configured on this node's device",
            self.peers.clone(),
        );
        registry.register(
            "porin_wireguard_handshakes",
            "Completed WireGuard handshakes seen per peer node (sampled every second)",
            self.handshakes.clone(),
        );
        registry.register(
            "porin_wireguard_latest_handshake_age_seconds",
            "Seconds since the latest handshake with a peer node (absent before the first)",
            self.handshake_age.clone(),
        );
        registry.register(
            "porin_wireguard_received_bytes",
            "Bytes received from a peer node through the tunnel",
            self.rx_bytes.clone(),
        );
        registry.register(
            "porin_wireguard_sent_bytes",
            "Bytes sent to a peer node through the tunnel",
            self.tx_bytes.clone(),
        );
        registry.register(
            "porin_wireguard_errors",
            "Encryption plugin errors by reason (device_down, configure, tunnel_map, status)",
            self.errors.clone(),
        );
        registry.register(
            "porin_wireguard_device_restarts",
            "Times the userspace WireGuard device process died and was restarted",
            self.restarts.clone(),
        );
    }

    /// One error of `reason`.
    pub fn error(&self, reason: ErrorReason) {
        self.errors
            .get_or_create(&ReasonLabels {
                reason: reason.as_str().to_string(),
            })
            .inc();
    }

    /// The device process was restarted.
    pub fn restarted(&self) {
        self.restarts.inc();
    }

    /// Update from a dump; `node_of` names the node of a public key (peers whose node is
    /// unknown, e.g. left over on an adopted device, are labelled by key).
    pub fn observe(&self, dump: &DeviceDump, node_of: impl Fn(&str) -> Option<String>, now: u64) {
        self.peers
            .set(i64::try_from(dump.peers.len()).unwrap_or(i64::MAX));
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut present = Vec::new();
        for peer in &dump.peers {
            let node = node_of(&peer.public_key).unwrap_or_else(|| peer.public_key.clone());
            let labels = PeerLabels { node: node.clone() };
            let last = seen.get(&node).copied().unwrap_or_default();
            if peer.latest_handshake.is_some() && peer.latest_handshake > last.handshake {
                self.handshakes.get_or_create(&labels).inc();
            }
            match peer.latest_handshake {
                Some(t) => {
                    let age = i64::try_from(now.saturating_sub(t)).unwrap_or(i64::MAX);
                    self.handshake_age.get_or_create(&labels).set(age);
                }
                None => {
                    self.handshake_age.remove(&labels);
                }
            }
            self.rx_bytes
                .get_or_create(&labels)
                .inc_by(growth(last.rx, peer.rx_bytes));
            self.tx_bytes
                .get_or_create(&labels)
                .inc_by(growth(last.tx, peer.tx_bytes));
            seen.insert(
                node.clone(),
                Seen {
                    handshake: peer.latest_handshake.or(last.handshake),
                    rx: peer.rx_bytes,
                    tx: peer.tx_bytes,
                },
            );
            present.push(node);
        }
        // Nodes that are no longer peers: their series go.
        seen.retain(|node, _| {
            let keep = present.contains(node);
            if !keep {
                let labels = PeerLabels { node: node.clone() };
                self.handshakes.remove(&labels);
                self.handshake_age.remove(&labels);
                self.rx_bytes.remove(&labels);
                self.tx_bytes.remove(&labels);
            }
            keep
        });
    }
}

/// How much a dump counter grew; a smaller value means the device restarted from zero.
fn growth(last: u64, now: u64) -> u64 {
    if now >= last { now - last } else { now }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;
    use crate::dump::PeerDump;

    fn dump(handshake: Option<u64>, rx: u64, tx: u64) -> DeviceDump {
        DeviceDump {
            public_key: "SELF=".to_string(),
            listen_port: 51871,
            peers: vec![PeerDump {
                public_key: "KEY2=".to_string(),
                endpoint: Some("192.168.200.2:51871".to_string()),
                allowed_ips: vec!["10.200.2.0/24".to_string()],
                latest_handshake: handshake,
                rx_bytes: rx,
                tx_bytes: tx,
            }],
        }
    }

    fn text(m: &WgMetrics) -> String {
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut out = String::new();
        encode(&mut out, &registry).expect("encode");
        out
    }

    fn node_of(key: &str) -> Option<String> {
        (key == "KEY2=").then(|| "node-2".to_string())
    }

    #[test]
    fn handshakes_bytes_and_restarts_are_counted() {
        let m = WgMetrics::default();
        m.observe(&dump(None, 0, 0), node_of, 1000);
        let t = text(&m);
        assert!(t.contains("porin_wireguard_peers 1"), "{t}");
        assert!(
            !t.contains("porin_wireguard_latest_handshake_age_seconds{"),
            "{t}"
        );

        m.observe(&dump(Some(990), 100, 200), node_of, 1000);
        m.observe(&dump(Some(990), 150, 260), node_of, 1001);
        m.observe(&dump(Some(1001), 170, 300), node_of, 1003);
        let t = text(&m);
        assert!(
            t.contains("porin_wireguard_handshakes_total{node=\"node-2\"} 2"),
            "{t}"
        );
        assert!(
            t.contains("porin_wireguard_latest_handshake_age_seconds{node=\"node-2\"} 2"),
            "{t}"
        );
        assert!(
            t.contains("porin_wireguard_received_bytes_total{node=\"node-2\"} 170"),
            "{t}"
        );
        assert!(
            t.contains("porin_wireguard_sent_bytes_total{node=\"node-2\"} 300"),
            "{t}"
        );

        // The device restarted: its counters start again at zero; ours keep growing.
        m.restarted();
        m.observe(&dump(Some(1010), 40, 50), node_of, 1011);
        let t = text(&m);
        assert!(
            t.contains("porin_wireguard_received_bytes_total{node=\"node-2\"} 210"),
            "{t}"
        );
        assert!(
            t.contains("porin_wireguard_handshakes_total{node=\"node-2\"} 3"),
            "{t}"
        );
        assert!(t.contains("porin_wireguard_device_restarts_total 1"), "{t}");

        m.error(ErrorReason::DeviceDown);
        m.error(ErrorReason::DeviceDown);
        let t = text(&m);
        assert!(
            t.contains("porin_wireguard_errors_total{reason=\"device_down\"} 2"),
            "{t}"
        );

        // The peer left: its series go.
        m.observe(
            &DeviceDump {
                peers: vec![],
                ..dump(None, 0, 0)
            },
            node_of,
            1012,
        );
        let t = text(&m);
        assert!(t.contains("porin_wireguard_peers 0"), "{t}");
        assert!(!t.contains("node=\"node-2\""), "{t}");
    }
}
