//! WG_CMD_SET_DEVICE / WG_CMD_GET_DEVICE messages and their netlink framing.

use std::net::{IpAddr, SocketAddr};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ipnet::Ipv4Net;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_generic::GenlMessage;
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardMessage, WireguardPeer, WireguardPeerAttribute, WireguardPeerFlags,
};

use crate::dump::{DeviceDump, PeerDump};

/// A peer as the kernel is told about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPeer {
    pub public_key: [u8; 32],
    pub endpoint: SocketAddr,
    pub allowed_ips: Vec<Ipv4Net>,
}

/// Set the device's private key and listen port (peers untouched).
pub fn set_device(ifname: &str, private_key: [u8; 32], listen_port: u16) -> WireguardMessage {
    WireguardMessage {
        cmd: WireguardCmd::SetDevice,
        attributes: vec![
            WireguardAttribute::IfName(ifname.to_string()),
            WireguardAttribute::PrivateKey(private_key),
            WireguardAttribute::ListenPort(listen_port),
        ],
    }
}

/// Remove the peers with the keys in `remove`, then create or update `set`, each with
/// exactly its allowed IPs (WGPEER_F_REPLACE_ALLOWEDIPS), as `wg set` does.
pub fn set_peers(ifname: &str, remove: &[[u8; 32]], set: &[KernelPeer]) -> WireguardMessage {
    let removed = remove.iter().map(|key| {
        WireguardPeer(vec![
            WireguardPeerAttribute::PublicKey(*key),
            WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe),
        ])
    });
    let updated = set.iter().map(|peer| {
        WireguardPeer(vec![
            WireguardPeerAttribute::PublicKey(peer.public_key),
            WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
            WireguardPeerAttribute::Endpoint(peer.endpoint),
            WireguardPeerAttribute::AllowedIps(
                peer.allowed_ips
                    .iter()
                    .map(|net| {
                        WireguardAllowedIp(vec![
                            WireguardAllowedIpAttr::Family(WireguardAddressFamily::Ipv4),
                            WireguardAllowedIpAttr::IpAddr(IpAddr::V4(net.network())),
                            WireguardAllowedIpAttr::Cidr(net.prefix_len()),
                        ])
                    })
                    .collect(),
            ),
        ])
    });
    WireguardMessage {
        cmd: WireguardCmd::SetDevice,
        attributes: vec![
            WireguardAttribute::IfName(ifname.to_string()),
            WireguardAttribute::Peers(removed.chain(updated).collect()),
        ],
    }
}

/// Ask for the device (a dump request: the kernel may split peers over several replies).
pub fn get_device(ifname: &str) -> WireguardMessage {
    WireguardMessage {
        cmd: WireguardCmd::GetDevice,
        attributes: vec![WireguardAttribute::IfName(ifname.to_string())],
    }
}

/// Netlink bytes of `message` for family `family_id`: GET as a dump, SET acknowledged.
pub fn frame(message: WireguardMessage, family_id: u16, sequence: u32) -> Vec<u8> {
    let dump = message.cmd == WireguardCmd::GetDevice;
    let mut genl = GenlMessage::from_payload(message);
    genl.set_resolved_family_id(family_id);
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { NLM_F_ACK };
    header.sequence_number = sequence;
    let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(genl));
    nl.finalize();
    let mut buf = vec![0; nl.buffer_len()];
    nl.serialize(&mut buf);
    buf
}

/// What one received netlink message said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Message(WireguardMessage),
    /// An acknowledgement (error code 0) or the end of a dump.
    Done,
    /// A negative errno from the kernel.
    Error(i32),
}

/// Every netlink message in `buf` (a datagram may hold several).
pub fn parse_replies(mut buf: &[u8]) -> Result<Vec<Reply>, String> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            return Err(format!("netlink message of {len} bytes in {}", buf.len()));
        }
        let msg = NetlinkMessage::<GenlMessage<WireguardMessage>>::deserialize(&buf[..len])
            .map_err(|e| e.to_string())?;
        out.push(match msg.payload {
            NetlinkPayload::InnerMessage(genl) => Reply::Message(genl.payload),
            NetlinkPayload::Error(e) => match e.code {
                None => Reply::Done,
                Some(code) => Reply::Error(code.get()),
            },
            _ => Reply::Done,
        });
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    Ok(out)
}

/// The device as `wg show dump` would print it, from the GET replies (peers may be split
/// over several messages; the device attributes repeat).
pub fn dump_of(replies: &[WireguardMessage]) -> Option<DeviceDump> {
    let mut public_key = None;
    let mut listen_port = None;
    let mut peers: Vec<PeerDump> = Vec::new();
    for attr in replies.iter().flat_map(|m| &m.attributes) {
        match attr {
            WireguardAttribute::PublicKey(k) => public_key = Some(STANDARD.encode(k)),
            WireguardAttribute::ListenPort(p) => listen_port = Some(*p),
            WireguardAttribute::Peers(list) => peers.extend(list.iter().filter_map(peer_dump)),
            _ => {}
        }
    }
    Some(DeviceDump {
        public_key: public_key.unwrap_or_else(|| "(none)".to_string()),
        listen_port: listen_port?,
        peers,
    })
}

fn peer_dump(peer: &WireguardPeer) -> Option<PeerDump> {
    let mut dump = PeerDump {
        public_key: String::new(),
        endpoint: None,
        allowed_ips: Vec::new(),
        latest_handshake: None,
        rx_bytes: 0,
        tx_bytes: 0,
    };
    for attr in peer.iter() {
        match attr {
            WireguardPeerAttribute::PublicKey(k) => dump.public_key = STANDARD.encode(k),
            WireguardPeerAttribute::Endpoint(e) => dump.endpoint = Some(e.to_string()),
            WireguardPeerAttribute::LastHandshake(t) if t.seconds > 0 => {
                dump.latest_handshake = u64::try_from(t.seconds).ok();
            }
            WireguardPeerAttribute::RxBytes(n) => dump.rx_bytes = *n,
            WireguardPeerAttribute::TxBytes(n) => dump.tx_bytes = *n,
            WireguardPeerAttribute::AllowedIps(ips) => {
                dump.allowed_ips.extend(ips.iter().filter_map(allowed_ip));
            }
            _ => {}
        }
    }
    (!dump.public_key.is_empty()).then_some(dump)
}

fn allowed_ip(ip: &WireguardAllowedIp) -> Option<String> {
    let mut addr = None;
    let mut cidr = None;
    for attr in ip.iter() {
        match attr {
            WireguardAllowedIpAttr::IpAddr(a) => addr = Some(*a),
            WireguardAllowedIpAttr::Cidr(c) => cidr = Some(*c),
            _ => {}
        }
    }
    Some(format!("{}/{}", addr?, cidr?))
}

#[cfg(test)]
mod tests {
    use netlink_packet_wireguard::WireguardTimeSpec;

    use super::*;

    const KEY_A: [u8; 32] = [0xa1; 32];
    const KEY_B: [u8; 32] = [0xb2; 32];

    fn peer() -> KernelPeer {
        KernelPeer {
            public_key: KEY_B,
            endpoint: "192.168.200.2:51871".parse().expect("endpoint"),
            allowed_ips: vec![
                "10.200.2.0/24".parse().expect("cidr"),
                "192.168.200.2/32".parse().expect("node"),
            ],
        }
    }

    /// The attribute bytes after the 16-byte netlink and 4-byte genetlink headers.
    fn attrs(bytes: &[u8]) -> &[u8] {
        &bytes[20..]
    }

    #[test]
    fn set_device_frames_key_and_port_as_the_kernel_expects() {
        let bytes = frame(set_device("pwg1", KEY_A, 51871), 0x1d, 7);
        // nlmsghdr: length, type = family id, flags = REQUEST|ACK, sequence 7.
        assert_eq!(
            u32::from_ne_bytes(bytes[0..4].try_into().expect("len")) as usize,
            bytes.len()
        );
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), 0x1d);
        assert_eq!(
            u16::from_ne_bytes([bytes[6], bytes[7]]),
            NLM_F_REQUEST | NLM_F_ACK
        );
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().expect("seq")), 7);
        // genlmsghdr: WG_CMD_SET_DEVICE (1), version 1.
        assert_eq!(&bytes[16..18], &[1, 1]);
        let a = attrs(&bytes);
        // WGDEVICE_A_IFNAME (2): "pwg1\0" padded to 8 + 4 header bytes.
        assert_eq!(&a[0..4], &[9, 0, 2, 0]);
        assert_eq!(&a[4..9], b"pwg1\0");
        // WGDEVICE_A_PRIVATE_KEY (3): 32 bytes.
        assert_eq!(&a[12..16], &[36, 0, 3, 0]);
        assert_eq!(&a[16..48], &KEY_A);
        // WGDEVICE_A_LISTEN_PORT (6): u16, host order.
        assert_eq!(&a[48..52], &[6, 0, 6, 0]);
        assert_eq!(u16::from_ne_bytes([a[52], a[53]]), 51871);
    }

    #[test]
    fn get_device_is_a_dump_request_by_name() {
        let bytes = frame(get_device("pwg1"), 0x1d, 1);
        assert_eq!(
            u16::from_ne_bytes([bytes[6], bytes[7]]),
            NLM_F_REQUEST | NLM_F_DUMP
        );
        assert_eq!(&bytes[16..18], &[0, 1], "WG_CMD_GET_DEVICE, version 1");
    }

    #[test]
    fn peers_are_removed_and_set_with_replaced_allowed_ips() {
        let msg = set_peers("pwg1", &[KEY_A], &[peer()]);
        let bytes = frame(msg.clone(), 0x1d, 2);
        let parsed = parse_replies(&bytes).expect("parse back");
        assert_eq!(parsed, vec![Reply::Message(msg)]);
        let a = attrs(&bytes);
        // WGDEVICE_A_PEERS (8) is nested (NLA_F_NESTED 0x8000).
        let peers_at = 12;
        assert_eq!(
            u16::from_ne_bytes([a[peers_at + 2], a[peers_at + 3]]),
            0x8008
        );
        let text = format!("{:?}", parse_replies(&bytes));
        assert!(
            text.contains("RemoveMe") && text.contains("ReplaceAllowedIps"),
            "{text}"
        );
        // Both allowed IPs, the pod CIDR and the node address, in one peer.
        assert!(
            text.contains("10.200.2.0")
                && text.contains("192.168.200.2")
                && text.contains("Cidr(32)"),
            "{text}"
        );
    }

    #[test]
    fn replies_become_the_dump_the_status_shows() {
        let reply = |peers: Vec<WireguardPeer>| WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![
                WireguardAttribute::IfName("pwg1".to_string()),
                WireguardAttribute::PublicKey(KEY_A),
                WireguardAttribute::ListenPort(51871),
                WireguardAttribute::Peers(peers),
            ],
        };
        let with_stats = WireguardPeer(vec![
            WireguardPeerAttribute::PublicKey(KEY_B),
            WireguardPeerAttribute::Endpoint("192.168.200.2:51871".parse().expect("ep")),
            WireguardPeerAttribute::LastHandshake(WireguardTimeSpec {
                seconds: 1_700_000_000,
                nano_seconds: 5,
            }),
            WireguardPeerAttribute::RxBytes(1234),
            WireguardPeerAttribute::TxBytes(5678),
            WireguardPeerAttribute::AllowedIps(vec![WireguardAllowedIp(vec![
                WireguardAllowedIpAttr::Family(WireguardAddressFamily::Ipv4),
                WireguardAllowedIpAttr::IpAddr("10.200.2.0".parse().expect("ip")),
                WireguardAllowedIpAttr::Cidr(24),
            ])]),
        ]);
        let never = WireguardPeer(vec![
            WireguardPeerAttribute::PublicKey([0xc3; 32]),
            WireguardPeerAttribute::LastHandshake(WireguardTimeSpec::default()),
        ]);
        // Two replies, as a dump split over messages; framed and parsed back on the way.
        let mut wire = frame(reply(vec![with_stats]), 0x1d, 3);
        wire.extend(frame(reply(vec![never]), 0x1d, 3));
        let messages: Vec<WireguardMessage> = parse_replies(&wire)
            .expect("parse")
            .into_iter()
            .filter_map(|r| match r {
                Reply::Message(m) => Some(m),
                _ => None,
            })
            .collect();
        let dump = dump_of(&messages).expect("dump");
        assert_eq!(dump.public_key, STANDARD.encode(KEY_A));
        assert_eq!(dump.listen_port, 51871);
        assert_eq!(dump.peers.len(), 2);
        let p = &dump.peers[0];
        assert_eq!(p.public_key, STANDARD.encode(KEY_B));
        assert_eq!(p.endpoint.as_deref(), Some("192.168.200.2:51871"));
        assert_eq!(p.allowed_ips, vec!["10.200.2.0/24"]);
        assert_eq!(p.latest_handshake, Some(1_700_000_000));
        assert_eq!((p.rx_bytes, p.tx_bytes), (1234, 5678));
        assert_eq!(dump.peers[1].latest_handshake, None);
        assert!(dump_of(&[]).is_none());
    }

    #[test]
    fn kernel_errors_and_acks_are_told_apart() {
        // An NLMSG_ERROR carrying -ENODEV (19) for sequence 4, then an ACK.
        let error = |code: i32| {
            let mut b = vec![0u8; 36];
            b[0..4].copy_from_slice(&36u32.to_ne_bytes());
            b[4..6].copy_from_slice(&2u16.to_ne_bytes());
            b[8..12].copy_from_slice(&4u32.to_ne_bytes());
            b[16..20].copy_from_slice(&code.to_ne_bytes());
            b[20..24].copy_from_slice(&20u32.to_ne_bytes());
            b
        };
        let mut wire = error(-19);
        wire.extend(error(0));
        assert_eq!(
            parse_replies(&wire).expect("parse"),
            vec![Reply::Error(-19), Reply::Done]
        );
        assert!(parse_replies(&[0xff; 20]).is_err());
    }
}
