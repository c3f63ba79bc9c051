//! BPF_PROG_TEST_RUN tests of IPv6 NodePort, ExternalIPs and LoadBalancer IPs in
//! `bpf/host.c` (`bpf/lib/nodeport6.h`) and of the reply path of local backends in
//! `bpf/pod.c`: DNAT + SNAT to the node's IPv6 address with valid L4 checksums, reverse
//! translation of replies, the ICMPv6 refusal of a frontend without backends, Maglev
//! selection (the same backend from any node for a given client tuple), and traffic
//! that is not for a frontend left untouched.
//!
//! Needs root (CAP_BPF + CAP_NET_ADMIN) and bpffs; fails with a clear message otherwise.

mod common;

use common::host_fixture::HostFixture;
use common::lb_hash::tuple_hash6;
use common::packet6::{packet6, parse_checked6, parse_icmpv6_checked};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddrV6};

use porin_core::datapath::{Lb6Frontend, Lb6Maps, MAP_LB_MAGLEV, MaglevMaps, node_ipv6_switches};

const TC_ACT_OK: u32 = 0;
const TC_ACT_REDIRECT: u32 = 7;
const TCP: u8 = 6;
const UDP: u8 = 17;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

const CLIENT: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x192, 0, 0, 0, 0, 0, 0xfa);
const NODE: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x192, 0, 0, 0, 0, 0, 1);
const OTHER_NODE: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x192, 0, 0, 0, 0, 0, 2);
const LOCAL_BACKEND: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 1, 0, 0, 0, 0, 9);
const REMOTE_BACKEND: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 2, 0, 0, 0, 0, 9);
const EXTERNAL_IP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
const NODE_PORT: u16 = 30080;

/// The node's programs and its IPv6 LB maps.
struct Fixture {
    node: HostFixture,
    lb6: Lb6Maps,
}

impl Fixture {
    fn new() -> Self {
        Self::with(&[])
    }

    /// The node's programs with `extra` compile-time switches.
    fn with(extra: &[(&str, u32)]) -> Self {
        let mut switches: Vec<(String, u32)> = vec![
            ("CFG_ENABLE_LB".into(), 1),
            ("CFG_ENABLE_NODEPORT".into(), 1),
        ];
        switches.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), *v)));
        switches.extend(node_ipv6_switches(NODE));
        let node = HostFixture::load("np6test", &switches);
        let lb6 =
            Lb6Maps::open(|name| node.dp.map_pin_path(name)).expect("opening the IPv6 lb maps");
        Self { node, lb6 }
    }

    /// Service 7 with the given backends (ports 8080) behind the [::]:30080/proto NodePort.
    fn node_port(&mut self, proto: u8, backends: &[Ipv6Addr]) {
        for (i, b) in backends.iter().enumerate() {
            let id = i as u32 + 1;
            self.lb6.write_backend(id, sock(*b, 8080)).expect("backend");
            self.lb6.write_slot(7, i as u32, id).expect("slot");
        }
        self.frontend(Ipv6Addr::UNSPECIFIED, NODE_PORT, proto, backends.len());
    }

    /// Another frontend of service 7 (an external or LoadBalancer IP).
    fn frontend(&mut self, ip: Ipv6Addr, port: u16, proto: u8, count: usize) {
        let fe = Lb6Frontend {
            addr: sock(ip, port),
            proto,
        };
        self.lb6
            .write_service(fe, 7, count as u32)
            .expect("frontend");
    }

    fn host(&self, packet: &[u8]) -> (u32, Vec<u8>) {
        self.node.host(packet)
    }
}

fn sock(ip: Ipv6Addr, port: u16) -> SocketAddrV6 {
    SocketAddrV6::new(ip, port, 0, 0)
}

#[test]
fn remote_backend_is_dnated_and_snated_and_the_reply_is_reverse_translated() {
    for proto in [TCP, UDP] {
        let mut f = Fixture::new();
        f.node_port(proto, &[REMOTE_BACKEND]);

        let (ret, out) = f.host(&packet6(CLIENT, NODE, proto, 40000, NODE_PORT, SYN));
        assert_eq!(
            ret, TC_ACT_REDIRECT,
            "proto {proto}: sent on toward the backend"
        );
        assert_eq!(
            parse_checked6(&out),
            (sock(NODE, 40000), sock(REMOTE_BACKEND, 8080)),
            "proto {proto}: SNAT to the node (client port kept), DNAT to the backend"
        );

        // The next packet of the connection keeps its backend and source port.
        let (ret, again) = f.host(&packet6(CLIENT, NODE, proto, 40000, NODE_PORT, ACK));
        assert_eq!(ret, TC_ACT_REDIRECT);
        assert_eq!(parse_checked6(&again).0, sock(NODE, 40000));

        let reply = packet6(REMOTE_BACKEND, NODE, proto, 8080, 40000, SYN | ACK);
        let (ret, out) = f.host(&reply);
        assert_eq!(ret, TC_ACT_REDIRECT, "reply sent back to the client");
        assert_eq!(
            parse_checked6(&out),
            (sock(NODE, NODE_PORT), sock(CLIENT, 40000)),
            "proto {proto}: the reply comes from the NodePort and goes to the client"
        );
    }
}

#[test]
fn maglev_picks_the_backend_of_the_client_tuple_slot() {
    const M: u32 = 251;
    let mut f = Fixture::with(&[("CFG_LB_MAGLEV", 1), ("CFG_LB_MAGLEV_M", M)]);
    let backends: Vec<Ipv6Addr> = (1..=3)
        .map(|i| Ipv6Addr::new(0xfd00, 0x10, 2, 0, 0, 0, i, 9))
        .collect();
    f.node_port(TCP, &backends);
    let mut maglev = MaglevMaps::open(&f.node.dp.map_pin_path(MAP_LB_MAGLEV), M)
        .expect("opening the maglev map");
    // Lopsided on purpose: a random slot could not match it.
    let table: Vec<u32> = (0..M)
        .map(|s| {
            if s % 5 == 0 {
                1
            } else if s % 2 == 1 {
                2
            } else {
                3
            }
        })
        .collect();
    maglev.set(7, &table).expect("table");

    let mut per_backend: BTreeMap<Ipv6Addr, usize> = BTreeMap::new();
    for i in 0..300u16 {
        let client = Ipv6Addr::new(0xfd00, 0x192, 0, 0, 0, 0, 1 + i % 7, 0xfa + i % 50);
        let sport = 20000 + i;
        let (ret, out) = f.host(&packet6(client, NODE, TCP, sport, NODE_PORT, SYN));
        assert_eq!(ret, TC_ACT_REDIRECT, "{client}:{sport} forwarded");
        let got = *parse_checked6(&out).1.ip();
        let slot = tuple_hash6(client, NODE, sport, NODE_PORT, TCP) % M;
        let want = backends[table[slot as usize] as usize - 1];
        assert_eq!(got, want, "[{client}]:{sport} hashes to slot {slot}");
        *per_backend.entry(got).or_default() += 1;
    }
    assert_eq!(per_backend.len(), 3, "{per_backend:?}");
}

#[test]
fn a_taken_snat_port_is_replaced() {
    let mut f = Fixture::new();
    f.node_port(TCP, &[REMOTE_BACKEND]);
    let (_, first) = f.host(&packet6(CLIENT, NODE, TCP, 40000, NODE_PORT, SYN));
    let other_client = Ipv6Addr::new(0xfd00, 0x192, 0, 0, 0, 0, 0, 0xfb);
    let (ret, second) = f.host(&packet6(other_client, NODE, TCP, 40000, NODE_PORT, SYN));
    assert_eq!(ret, TC_ACT_REDIRECT);
    let (a, b) = (parse_checked6(&first).0, parse_checked6(&second).0);
    assert_eq!(a, sock(NODE, 40000));
    assert_eq!(*b.ip(), NODE);
    assert_ne!(
        b.port(),
        40000,
        "two clients, one backend: distinct SNAT ports"
    );
    let reply = packet6(REMOTE_BACKEND, NODE, TCP, 8080, b.port(), ACK);
    let (_, out) = f.host(&reply);
    assert_eq!(parse_checked6(&out).1, sock(other_client, 40000));
}

#[test]
fn local_backend_is_dnated_only_and_its_reply_leaves_by_the_device() {
    let mut f = Fixture::new();
    f.node.local_endpoint(IpAddr::V6(LOCAL_BACKEND));
    f.node_port(TCP, &[LOCAL_BACKEND]);

    let (ret, out) = f.host(&packet6(CLIENT, NODE, TCP, 40001, NODE_PORT, SYN));
    assert_eq!(ret, TC_ACT_OK, "the stack delivers it to the pod");
    assert_eq!(
        parse_checked6(&out),
        (sock(CLIENT, 40001), sock(LOCAL_BACKEND, 8080)),
        "no SNAT for a local backend"
    );

    let reply = packet6(LOCAL_BACKEND, CLIENT, TCP, 8080, 40001, SYN | ACK);
    let (ret, out) = f.node.run_from_pod(&reply);
    assert_eq!(ret, TC_ACT_REDIRECT, "sent out of the external device");
    assert_eq!(
        parse_checked6(&out),
        (sock(NODE, NODE_PORT), sock(CLIENT, 40001))
    );
}

#[test]
fn a_tcp_node_port_without_backends_refuses_with_a_reset() {
    let mut f = Fixture::new();
    f.node_port(TCP, &[]);
    // packet6 sends sequence number 1 and 5 bytes of payload: SYN + 5 = ACK 7.
    let (ret, out) = f.host(&packet6(CLIENT, NODE, TCP, 40003, NODE_PORT, SYN));
    assert_eq!(
        ret, TC_ACT_REDIRECT,
        "the refusal goes back out of the device"
    );
    assert_eq!(
        parse_checked6(&out),
        (sock(NODE, NODE_PORT), sock(CLIENT, 40003)),
        "from the frontend the client targeted"
    );
    let tcp = &out[54..];
    assert_eq!(tcp[13], 0x14, "RST|ACK");
    assert_eq!(
        &tcp[4..12],
        &[0, 0, 0, 0, 0, 0, 0, 7],
        "SEQ 0, ACK SEG.SEQ+SEG.LEN"
    );
    assert_eq!(out.len(), 14 + 40 + 20, "nothing but the RST");
}

#[test]
fn a_udp_node_port_without_backends_refuses_with_icmpv6_port_unreachable() {
    let mut f = Fixture::new();
    f.node_port(UDP, &[]);
    let (ret, out) = f.host(&packet6(CLIENT, NODE, UDP, 40003, NODE_PORT, 0));
    assert_eq!(
        ret, TC_ACT_REDIRECT,
        "the refusal goes back out of the device"
    );
    let (src, dst, icmp_type, code, quote) = parse_icmpv6_checked(&out);
    assert_eq!(
        (src, dst),
        (NODE, CLIENT),
        "from the address the client targeted"
    );
    assert_eq!(
        (icmp_type, code),
        (1, 4),
        "destination unreachable, port unreachable"
    );
    assert_eq!(
        &quote[24..40],
        &NODE.octets(),
        "quotes the offending packet"
    );
}

#[test]
fn external_and_load_balancer_ips_are_served_and_snated_to_the_node() {
    let mut f = Fixture::new();
    f.node_port(TCP, &[REMOTE_BACKEND]);
    f.frontend(EXTERNAL_IP, 80, TCP, 1);

    let (ret, out) = f.host(&packet6(CLIENT, EXTERNAL_IP, TCP, 41000, 80, SYN));
    assert_eq!(ret, TC_ACT_REDIRECT, "sent on toward the backend");
    assert_eq!(
        parse_checked6(&out),
        (sock(NODE, 41000), sock(REMOTE_BACKEND, 8080)),
        "SNAT to the node's address, where the reply comes back"
    );
    let (ret, out) = f.host(&packet6(REMOTE_BACKEND, NODE, TCP, 8080, 41000, SYN | ACK));
    assert_eq!(ret, TC_ACT_REDIRECT);
    assert_eq!(
        parse_checked6(&out),
        (sock(EXTERNAL_IP, 80), sock(CLIENT, 41000)),
        "the reply comes from the external IP"
    );
    // The [::] NodePort frontend does not answer for an address that is not the node's.
    let other = packet6(CLIENT, EXTERNAL_IP, TCP, 41001, NODE_PORT, SYN);
    assert_eq!(f.host(&other), (TC_ACT_OK, other.clone()));
}

#[test]
fn traffic_that_is_not_for_an_ipv6_frontend_is_untouched() {
    let mut f = Fixture::new();
    f.node_port(TCP, &[REMOTE_BACKEND]);
    for pkt in [
        packet6(CLIENT, NODE, TCP, 40002, 22, SYN),
        packet6(CLIENT, NODE, UDP, 40002, NODE_PORT, 0),
        packet6(CLIENT, OTHER_NODE, TCP, 40002, NODE_PORT, SYN),
        packet6(REMOTE_BACKEND, NODE, TCP, 8080, 40002, ACK),
    ] {
        let (ret, out) = f.host(&pkt);
        assert_eq!(
            (ret, out),
            (TC_ACT_OK, pkt),
            "packet modified or not passed"
        );
    }
}
