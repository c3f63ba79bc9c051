//! BPF_PROG_TEST_RUN tests of NodePort in `bpf/host.c` (and the reply path of local backends
//! in `bpf/pod.c`): DNAT + SNAT with valid checksums, reverse translation of replies, and
//! traffic that is not for a NodePort left untouched.
//!
//! Needs root (CAP_BPF + CAP_NET_ADMIN) and bpffs; fails with a clear message otherwise.

mod common;

use common::host_fixture::HostFixture;
use common::packet::{packet, parse_checked};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use porin_core::datapath::{LbFrontend, LbMaps};

const TC_ACT_OK: u32 = 0;
const TC_ACT_REDIRECT: u32 = 7;
const TCP: u8 = 6;
const UDP: u8 = 17;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

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

#[test]
fn a_node_port_without_backends_drops() {
    let mut f = Fixture::new();
    f.node_port(TCP, &[]);
    let (ret, _) = f.host(&packet(CLIENT, NODE, TCP, 40003, NODE_PORT, SYN));
    assert_eq!(ret, 2, "TC_ACT_SHOT");
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
