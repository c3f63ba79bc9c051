//! BPF_PROG_TEST_RUN tests of NodePort in `bpf/host.c` (and the reply path of local backends
//! in `bpf/pod.c`): DNAT + SNAT with valid checksums, reverse translation of replies, the
//! refusal of a frontend without backends (a TCP RST or an ICMP port unreachable back to
//! the client), and traffic that is not for a NodePort left untouched.
//!
//! Needs root (CAP_BPF + CAP_NET_ADMIN) and bpffs; fails with a clear message otherwise.

mod common;

use common::host_fixture::HostFixture;
use common::packet::{packet, parse_checked, with_ip_options, with_tcp_ack};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use porin_core::datapath::{LbFrontend, LbMaps, abi::Direction};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
const TCP: u8 = 6;
const UDP: u8 = 17;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;
/// DROP_NO_SERVICE (Cilium's SERVICE_BACKEND_NOT_FOUND) as the drop counters key it.
const DROP_NO_SERVICE: u8 = 158;

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 200, 250);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 200, 1);
const OTHER_NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 200, 2);
const LOCAL_BACKEND: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 9);
const REMOTE_BACKEND: Ipv4Addr = Ipv4Addr::new(10, 200, 2, 9);
const NODE_PORT: u16 = 30080;

// ---- fixture -------------------------------------------------------------------------

/// The node's programs and its LB maps.
struct Fixture {
    node: HostFixture,
    lb: LbMaps,
}

impl Fixture {
    fn new() -> Self {
        let switches: Vec<(String, u32)> = vec![
            ("CFG_ENABLE_LB".into(), 1),
            ("CFG_ENABLE_NODEPORT".into(), 1),
            ("CFG_NODE_IPV4".into(), u32::from_ne_bytes(NODE.octets())),
        ];
        let node = HostFixture::load("nptest", &switches);
        let lb = LbMaps::open(|name| node.dp.map_pin_path(name)).expect("opening the lb maps");
        Self { node, lb }
    }

    /// NodePort 30080/proto (wildcard frontend) with the given backends, ports 8080.
    fn node_port(&mut self, proto: u8, backends: &[Ipv4Addr]) {
        for (i, b) in backends.iter().enumerate() {
            let id = i as u32 + 1;
            self.lb
                .upsert_backend(id, SocketAddrV4::new(*b, 8080))
                .expect("backend");
            self.lb.set_slot(7, i as u32, id).expect("slot");
        }
        let fe = LbFrontend {
            addr: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, NODE_PORT),
            proto,
        };
        self.lb
            .upsert_service(fe, 7, backends.len() as u32)
            .expect("service");
    }

    fn host(&self, packet: &[u8]) -> (u32, Vec<u8>) {
        self.node.host(packet)
    }
}

fn sock(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

// ---- tests ---------------------------------------------------------------------------

#[test]
fn remote_backend_is_dnated_and_snated_and_the_reply_is_reverse_translated() {
    for proto in [TCP, UDP] {
        let mut f = Fixture::new();
        f.node_port(proto, &[REMOTE_BACKEND]);

        let syn = packet(CLIENT, NODE, proto, 40000, NODE_PORT, SYN);
        let (ret, out) = f.host(&syn);
        assert_eq!(
            ret, TC_ACT_REDIRECT,
            "proto {proto}: sent out toward the backend"
        );
        let p = parse_checked(&out);
        assert_eq!(
            p.src,
            sock(NODE, 40000),
            "SNAT to the node, client port kept"
        );
        assert_eq!(p.dst, sock(REMOTE_BACKEND, 8080), "DNAT to the backend");

        // The next packet of the connection keeps its backend and source port.
        let (ret, again) = f.host(&packet(CLIENT, NODE, proto, 40000, NODE_PORT, ACK));
        assert_eq!(ret, TC_ACT_REDIRECT);
        assert_eq!(parse_checked(&again).src, sock(NODE, 40000));

        let reply = packet(REMOTE_BACKEND, NODE, proto, 8080, 40000, SYN | ACK);
        let (ret, out) = f.host(&reply);
        assert_eq!(ret, TC_ACT_REDIRECT, "reply sent back to the client");
        let p = parse_checked(&out);
        assert_eq!(
            p.src,
            sock(NODE, NODE_PORT),
            "reply comes from the NodePort"
        );
        assert_eq!(p.dst, sock(CLIENT, 40000), "reply goes to the client");
    }
}

#[test]
fn a_taken_snat_port_is_replaced() {
    let mut f = Fixture::new();
    f.node_port(TCP, &[REMOTE_BACKEND]);
    let (_, first) = f.host(&packet(CLIENT, NODE, TCP, 40000, NODE_PORT, SYN));
    let other_client = Ipv4Addr::new(192, 168, 200, 251);
    let (ret, second) = f.host(&packet(other_client, NODE, TCP, 40000, NODE_PORT, SYN));
    assert_eq!(ret, TC_ACT_REDIRECT);
    let (a, b) = (parse_checked(&first), parse_checked(&second));
    assert_eq!(a.src, sock(NODE, 40000));
    assert_eq!(*b.src.ip(), NODE);
    assert_ne!(
        b.src.port(),
        40000,
        "two clients, one backend: distinct SNAT ports"
    );
    // Each reply finds its own client.
    let reply = packet(REMOTE_BACKEND, NODE, TCP, 8080, b.src.port(), ACK);
    let (_, out) = f.host(&reply);
    assert_eq!(parse_checked(&out).dst, sock(other_client, 40000));
}

#[test]
fn local_backend_is_dnated_only_and_its_reply_leaves_by_the_device() {
    let mut f = Fixture::new();
    f.node.local_endpoint(IpAddr::V4(LOCAL_BACKEND));
    f.node_port(TCP, &[LOCAL_BACKEND]);

    let (ret, out) = f.host(&packet(CLIENT, NODE, TCP, 40001, NODE_PORT, SYN));
    assert_eq!(ret, TC_ACT_OK, "the stack delivers it to the pod");
    let p = parse_checked(&out);
    assert_eq!(p.src, sock(CLIENT, 40001), "no SNAT for a local backend");
    assert_eq!(p.dst, sock(LOCAL_BACKEND, 8080));

    // The pod's reply, through the pod program (from-pod).
    let (ret, out) =
        f.node
            .run_from_pod(&packet(LOCAL_BACKEND, CLIENT, TCP, 8080, 40001, SYN | ACK));
    assert_eq!(ret, TC_ACT_REDIRECT, "sent out of the external device");
    let p = parse_checked(&out);
    assert_eq!(p.src, sock(NODE, NODE_PORT));
    assert_eq!(p.dst, sock(CLIENT, 40001));
}

#[test]
fn traffic_that_is_not_for_a_node_port_is_untouched() {
    let mut f = Fixture::new();
    f.node_port(TCP, &[REMOTE_BACKEND]);
    for pkt in [
        packet(CLIENT, NODE, TCP, 40002, 22, SYN), // not a NodePort
        packet(CLIENT, NODE, UDP, 40002, NODE_PORT, 0), // NodePort is TCP only
        packet(CLIENT, OTHER_NODE, TCP, 40002, NODE_PORT, SYN), // not this node's address
        packet(REMOTE_BACKEND, NODE, TCP, 8080, 40002, ACK), // reply of no connection
    ] {
        let (ret, out) = f.host(&pkt);
        assert_eq!(ret, TC_ACT_OK);
        assert_eq!(out, pkt, "packet modified");
    }
    // Non-IP (ARP) passes too.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    let (ret, out) = f.host(&arp);
    assert_eq!((ret, out), (TC_ACT_OK, arp));
}

// ---- frontends without backends: refused at once ----------------------------------

/// What a test checks of a TCP RST: (flags, seq, ack), after checking the IPv4 header, the
/// IP and TCP checksums, that nothing follows the 20-byte TCP header, and that it goes back
/// to the MAC the offending segment came from.
fn rst_of(out: &[u8], offending: &[u8]) -> (u8, u32, u32) {
    assert_eq!(out.len(), 14 + 20 + 20, "nothing but the RST: {out:02x?}");
    assert_eq!(&out[0..6], &offending[6..12], "to the client's MAC");
    assert_eq!(
        &out[6..12],
        &offending[0..6],
        "from the MAC the client sent to"
    );
    assert_eq!((out[14], out[23]), (0x45, TCP), "a plain IPv4 TCP header");
    let tcp = &out[34..];
    assert_eq!(tcp[12], 0x50, "a 20-byte TCP header");
    let word = |at: usize| u32::from_be_bytes([tcp[at], tcp[at + 1], tcp[at + 2], tcp[at + 3]]);
    (tcp[13], word(4), word(8))
}

/// Packets dropped for want of a backend, as the node's counters say.
fn no_backend_drops(f: &Fixture) -> u64 {
    f.node
        .dp
        .counters()
        .expect("counters")
        .into_iter()
        .find(|c| c.reason == DROP_NO_SERVICE && c.direction == Some(Direction::Ingress))
        .map_or(0, |c| c.packets)
}

#[test]
fn a_syn_to_a_node_port_without_backends_is_refused_with_a_reset() {
    let mut f = Fixture::new();
    f.node_port(TCP, &[]);
    // packet() sends sequence number 1 and 5 bytes of payload: SYN + 5 = ACK 7.
    let syn = packet(CLIENT, NODE, TCP, 40003, NODE_PORT, SYN);
    let (ret, out) = f.host(&syn);
    assert_eq!(
        ret, TC_ACT_REDIRECT,
        "the refusal goes back out of the device"
    );
    let p = parse_checked(&out);
    assert_eq!(
        (p.src, p.dst, p.proto),
        (sock(NODE, NODE_PORT), sock(CLIENT, 40003), TCP),
        "from the frontend the client targeted, to the client"
    );
    assert_eq!(
        rst_of(&out, &syn),
        (RST | ACK, 0, 7),
        "<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>"
    );
    assert_eq!(no_backend_drops(&f), 1, "the drop is still counted");
}

#[test]
fn a_segment_with_ack_is_refused_with_a_reset_at_its_ack_number() {
    let mut f = Fixture::new();
    f.node_port(TCP, &[]);
    let segment = with_tcp_ack(
        packet(CLIENT, NODE, TCP, 40004, NODE_PORT, ACK),
        0xdead_beef,
    );
    let (ret, out) = f.host(&segment);
    assert_eq!(ret, TC_ACT_REDIRECT);
    let p = parse_checked(&out);
    assert_eq!((p.src, p.dst), (sock(NODE, NODE_PORT), sock(CLIENT, 40004)));
    assert_eq!(
        rst_of(&out, &segment),
        (RST, 0xdead_beef, 0),
        "<SEQ=SEG.ACK><CTL=RST>"
    );
}

#[test]
fn an_external_ip_without_backends_refuses_from_the_external_ip() {
    const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
    let mut f = Fixture::new();
    f.node_port(TCP, &[]);
    let fe = LbFrontend {
        addr: SocketAddrV4::new(EXTERNAL_IP, 80),
        proto: TCP,
    };
    f.lb.upsert_service(fe, 7, 0).expect("external IP frontend");
    let syn = packet(CLIENT, EXTERNAL_IP, TCP, 41002, 80, SYN);
    let (ret, out) = f.host(&syn);
    assert_eq!(ret, TC_ACT_REDIRECT);
    let p = parse_checked(&out);
    assert_eq!(
        (p.src, p.dst),
        (sock(EXTERNAL_IP, 80), sock(CLIENT, 41002)),
        "the RST comes from the address and port the client targeted"
    );
    assert_eq!(rst_of(&out, &syn), (RST | ACK, 0, 7));
}

#[test]
fn a_reset_or_a_header_with_options_is_dropped_not_answered() {
    let mut f = Fixture::new();
    f.node_port(TCP, &[]);
    let syn = packet(CLIENT, NODE, TCP, 40005, NODE_PORT, SYN);
    for (what, pkt) in [
        ("RST", packet(CLIENT, NODE, TCP, 40005, NODE_PORT, RST)),
        (
            "RST|ACK",
            packet(CLIENT, NODE, TCP, 40005, NODE_PORT, RST | ACK),
        ),
        ("SYN with IP options", with_ip_options(&syn)),
    ] {
        assert_eq!(f.host(&pkt).0, TC_ACT_SHOT, "{what}: dropped, not answered");
    }
    assert_eq!(no_backend_drops(&f), 3, "each counted as a drop");
    // The same frontend does answer a plain SYN: what made the difference is the packet.
    assert_eq!(f.host(&syn).0, TC_ACT_REDIRECT, "a plain SYN is refused");

    let mut f = Fixture::new();
    f.node_port(UDP, &[]);
    let dgram = packet(CLIENT, NODE, UDP, 40005, NODE_PORT, 0);
    assert_eq!(
        f.host(&with_ip_options(&dgram)).0,
        TC_ACT_SHOT,
        "UDP with IP options: dropped, not quoted"
    );
    assert_eq!(
        f.host(&dgram).0,
        TC_ACT_REDIRECT,
        "a plain datagram is refused"
    );
}

#[test]
fn a_udp_node_port_without_backends_refuses_with_icmp_port_unreachable() {
    let mut f = Fixture::new();
    f.node_port(UDP, &[]);
    let dgram = packet(CLIENT, NODE, UDP, 40006, NODE_PORT, 0);
    let (ret, out) = f.host(&dgram);
    assert_eq!(
        ret, TC_ACT_REDIRECT,
        "the refusal goes back out of the device"
    );
    // parse_checked verifies the IP and ICMP checksums.
    let icmp = parse_checked(&out);
    assert_eq!(icmp.proto, 1, "ICMP");
    assert_eq!(
        (*icmp.src.ip(), *icmp.dst.ip()),
        (NODE, CLIENT),
        "from the address the client targeted"
    );
    assert_eq!((out[34], out[35]), (3, 3), "destination/port unreachable");
    assert_eq!(
        &out[42..70],
        &dgram[14..42],
        "quotes the IP header and 8 bytes of UDP"
    );
    assert_eq!(out.len(), 14 + 20 + 8 + 28, "nothing but the ICMP error");
    assert_eq!(&out[0..6], &dgram[6..12], "to the client's MAC");
    assert_eq!(no_backend_drops(&f), 1, "the drop is still counted");
}

#[test]
fn an_external_ip_is_served_and_snated_to_the_node_not_to_the_external_ip() {
    const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
    let mut f = Fixture::new();
    f.node_port(TCP, &[REMOTE_BACKEND]);
    // The same service behind an exact external-IP frontend {203.0.113.10, 80}.
    let fe = LbFrontend {
        addr: SocketAddrV4::new(EXTERNAL_IP, 80),
        proto: TCP,
    };
    f.lb.upsert_service(fe, 7, 1).expect("external IP frontend");

    let (ret, out) = f.host(&packet(CLIENT, EXTERNAL_IP, TCP, 41000, 80, SYN));
    assert_eq!(ret, TC_ACT_REDIRECT, "sent out toward the backend");
    let p = parse_checked(&out);
    assert_eq!(p.dst, sock(REMOTE_BACKEND, 8080), "DNAT to the backend");
    assert_eq!(
        p.src,
        sock(NODE, 41000),
        "SNAT to this node's address, where the reply comes back"
    );

    let reply = packet(REMOTE_BACKEND, NODE, TCP, 8080, 41000, SYN | ACK);
    let (ret, out) = f.host(&reply);
    assert_eq!(ret, TC_ACT_REDIRECT, "reply sent back to the client");
    let p = parse_checked(&out);
    assert_eq!(
        p.src,
        sock(EXTERNAL_IP, 80),
        "the reply comes from the external IP"
    );
    assert_eq!(p.dst, sock(CLIENT, 41000));

    // The wildcard NodePort frontend does not answer for an address that is not the node's.
    let other = packet(CLIENT, EXTERNAL_IP, TCP, 41001, NODE_PORT, SYN);
    assert_eq!(f.host(&other), (TC_ACT_OK, other.clone()));
}
