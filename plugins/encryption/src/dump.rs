//! Parsing `wg show <device> dump`.

use serde::Serialize;

/// The device line of the dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceDump {
    pub public_key: String,
    pub listen_port: u16,
    pub peers: Vec<PeerDump>,
}

/// One peer line of the dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerDump {
    pub public_key: String,
    /// `None` until the peer's address is known.
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    /// Unix time of the latest handshake; `None` when there was none.
    pub latest_handshake: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// Parse the tab-separated dump: the device first (private key, public key, listen
/// port, fwmark), then one line per peer (public key, preshared key, endpoint, allowed
/// ips, latest handshake, rx, tx, keepalive). The private key is never kept.
pub fn parse(text: &str) -> Option<DeviceDump> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let device: Vec<&str> = lines.next()?.split('\t').collect();
    let mut dump = DeviceDump {
        public_key: (*device.get(1)?).to_string(),
        listen_port: device.get(2)?.parse().ok()?,
        peers: Vec::new(),
    };
    for line in lines {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 7 {
            continue;
        }
        let handshake: u64 = f[4].parse().unwrap_or(0);
        dump.peers.push(PeerDump {
            public_key: f[0].to_string(),
            endpoint: (f[2] != "(none)").then(|| f[2].to_string()),
            allowed_ips: f[3]
                .split(',')
                .filter(|s| !s.is_empty() && *s != "(none)")
                .map(str::to_string)
                .collect(),
            latest_handshake: (handshake != 0).then_some(handshake),
            rx_bytes: f[5].parse().unwrap_or(0),
            tx_bytes: f[6].parse().unwrap_or(0),
        });
    }
    Some(dump)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_and_peers() {
        let text = "cPRIV=\tPUB1=\t51871\toff\n\
                    PEER2=\t(none)\t192.168.200.2:51871\t10.200.2.0/24\t1700000000\t1234\t5678\toff\n\
                    PEER3=\t(none)\t(none)\t10.200.3.0/24,10.9.0.0/16\t0\t0\t0\toff\n";
        let dump = parse(text).expect("dump");
        assert_eq!(dump.public_key, "PUB1=");
        assert_eq!(dump.listen_port, 51871);
        assert_eq!(dump.peers.len(), 2);
        let p = &dump.peers[0];
        assert_eq!(p.endpoint.as_deref(), Some("192.168.200.2:51871"));
        assert_eq!(p.latest_handshake, Some(1_700_000_000));
        assert_eq!((p.rx_bytes, p.tx_bytes), (1234, 5678));
        let q = &dump.peers[1];
        assert_eq!(q.endpoint, None);
        assert_eq!(q.latest_handshake, None);
        assert_eq!(q.allowed_ips, vec!["10.200.3.0/24", "10.9.0.0/16"]);
        assert!(
            !format!("{dump:?}").contains("cPRIV"),
            "the private key is dropped"
        );
        assert!(parse("").is_none());
    }
}
