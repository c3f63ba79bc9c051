//! BPF_PROG_TEST_RUN tests of proxy redirection in `bpf/pod.c` (`bpf/lib/proxy.h`): an
//! allow entry with a proxy port DNATs the connection to {node IP, proxy port} and records
//! the original destination in `porin_proxy_redir`; later packets follow; the proxy's
//! replies get the original destination back as their source; an allow entry without a
//! proxy port leaves the packet alone. On ingress (to the pod), a connection with a proxy
//! port is handed back to the node unchanged (bpf_redirect to the veth's ingress).
//!
//! Needs root (CAP_BPF + CAP_NET_ADMIN) and bpffs; fails with a clear message otherwise.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use common::packet::packet;
use common::pod_fixture::{
    EGRESS, INGRESS, PodFixture, TC_ACT_OK, TC_ACT_SHOT, endpoint, key, value,
};
use porin_core::datapath::{MAP_PROXY_REDIR, PodProgram, ProxyRedirects, abi::POLICY_ALLOW};

const TCP: u8 = 6;
const UDP: u8 = 17;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

const POD: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// The node IP: loopback, so that the test's own sockets stand for the proxies (the program
/// looks the proxy's socket up in the namespace BPF_PROG_TEST_RUN runs in).
const NODE: Ipv4Addr = Ipv4Addr::LOCALHOST;
const EP_POD: u32 = 11;
const EP_DNS: u32 = 12;
const ID_POD: u32 = 1001;
const ID_DNS: u32 = 1002;

/// (source, destination) of a frame built by `packet` (or rewritten by the program).
fn endpoints_of(frame: &[u8]) -> (SocketAddrV4, SocketAddrV4) {
    let ip = |o: usize| Ipv4Addr::new(frame[o], frame[o + 1], frame[o + 2], frame[o + 3]);
    let port = |o: usize| u16::from_be_bytes([frame[o], frame[o + 1]]);
    (
        SocketAddrV4::new(ip(26), port(34)),
        SocketAddrV4::new(ip(30), port(36)),
    )
}

struct Fixture(PodFixture);

impl Fixture {
    /// POD and DNS as local endpoints, POD's egress under default deny.
    fn new() -> Self {
        let endpoints = [endpoint(POD, EP_POD, ID_POD), endpoint(DNS, EP_DNS, ID_DNS)];
        let mut f = PodFixture::load(
            "proxy",
            &[
                ("CFG_ENABLE_POLICY", 1),
                ("CFG_NODE_IPV4", u32::from_ne_bytes(NODE.octets())),
            ],
            &endpoints,
        );
        f.default_deny(EP_POD, EGRESS);
        Self(f)
    }

    /// POD may reach DNS on `proto`/`dport`, through the proxy on `proxy_port` (0: none).
    fn allow(&mut self, proto: u8, dport: u16, proxy_port: u16) {
        self.0.entry(
            key(EP_POD, EGRESS, ID_DNS, proto, dport),
            value(7, POLICY_ALLOW, proxy_port),
        );
    }

    fn run(&self, program: PodProgram, packet: &[u8]) -> (u32, Vec<u8>) {
        self.0.run_packet(program, packet)
    }

    fn redirects(&self) -> ProxyRedirects {
        ProxyRedirects::open(&self.0.dp.map_pin_path(MAP_PROXY_REDIR)).expect("redirect map")
    }
}

#[test]
fn udp_query_is_steered_to_the_proxy_and_its_reply_comes_from_the_original_server() {
    let proxy = std::net::UdpSocket::bind((NODE, 0)).expect("proxy socket");
    let proxy_port = proxy.local_addr().expect("proxy port").port();
    let mut f = Fixture::new();
    f.allow(UDP, 53, proxy_port);
    let query = packet(POD, DNS, UDP, 40000, 53, 0);
    let (ret, out) = f.run(PodProgram::FromPod, &query);
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(
        endpoints_of(&out),
        (
            SocketAddrV4::new(POD, 40000),
            SocketAddrV4::new(NODE, proxy_port)
        ),
        "the query goes to the node's proxy"
    );
    let r = f
        .redirects()
        .get(SocketAddrV4::new(POD, 40000), UDP)
        .expect("map read")
        .expect("the original destination is recorded");
    assert_eq!(r.original_destination, SocketAddrV4::new(DNS, 53));
    assert_eq!(
        (r.proxy_port, r.endpoint_id, r.destination_identity),
        (proxy_port, EP_POD, ID_DNS)
    );
    // A second query on the same socket (conntrack entry exists) follows the redirection.
    let (_, out) = f.run(PodProgram::FromPod, &query);
    assert_eq!(endpoints_of(&out).1, SocketAddrV4::new(NODE, proxy_port));
    // The proxy's answer (node IP:proxy port -> pod) enters the pod from the server.
    let answer = packet(NODE, POD, UDP, proxy_port, 40000, 0);
    let (ret, out) = f.run(PodProgram::ToPod, &answer);
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(
        endpoints_of(&out),
        (SocketAddrV4::new(DNS, 53), SocketAddrV4::new(POD, 40000))
    );
    // The proxy is gone (agent restarting): queries go to the server itself.
    drop(proxy);
    let (ret, out) = f.run(PodProgram::FromPod, &query);
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(out, query, "without a proxy the query goes out unchanged");
}

#[test]
fn tcp_connection_is_steered_whole_and_plain_allows_are_untouched() {
    let proxy = std::net::TcpListener::bind((NODE, 0)).expect("proxy socket");
    let proxy_port = proxy.local_addr().expect("proxy port").port();
    let mut f = Fixture::new();
    f.allow(TCP, 53, proxy_port);
    f.allow(TCP, 80, 0);
    let syn = packet(POD, DNS, TCP, 40001, 53, SYN);
    let (ret, out) = f.run(PodProgram::FromPod, &syn);
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(endpoints_of(&out).1, SocketAddrV4::new(NODE, proxy_port));
    let synack = packet(NODE, POD, TCP, proxy_port, 40001, SYN | ACK);
    let (_, out) = f.run(PodProgram::ToPod, &synack);
    assert_eq!(endpoints_of(&out).0, SocketAddrV4::new(DNS, 53));
    let ack = packet(POD, DNS, TCP, 40001, 53, ACK);
    let (_, out) = f.run(PodProgram::FromPod, &ack);
    assert_eq!(endpoints_of(&out).1, SocketAddrV4::new(NODE, proxy_port));
    // Port 80 is allowed without a proxy: not rewritten, nothing recorded.
    let web = packet(POD, DNS, TCP, 40002, 80, SYN);
    let (ret, out) = f.run(PodProgram::FromPod, &web);
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(out, web);
    assert!(
        f.redirects()
            .get(SocketAddrV4::new(POD, 40002), TCP)
            .expect("map read")
            .is_none()
    );
    // A packet from the node that is no proxy reply is left alone.
    let other = packet(NODE, POD, TCP, 9999, 40001, ACK);
    let (_, out) = f.run(PodProgram::ToPod, &other);
    assert_eq!(out, other);
}

/// The program's return code after `bpf_redirect` (include/uapi/linux/pkt_cls.h).
const TC_ACT_REDIRECT: u32 = 7;

#[test]
fn ingress_connection_with_a_proxy_port_is_handed_back_to_the_node_unchanged() {
    let proxy = std::net::TcpListener::bind((NODE, 0)).expect("proxy socket");
    let proxy_port = proxy.local_addr().expect("proxy port").port();
    let mut f = Fixture::new();
    // POD's ingress: DNS's identity may reach port 8080 through the proxy, port 8081 without.
    for (dport, port) in [(8080, proxy_port), (8081, 0)] {
        f.0.entry(
            key(EP_POD, INGRESS, ID_DNS, TCP, dport),
            value(8, POLICY_ALLOW, port),
        );
    }
    let syn = packet(DNS, POD, TCP, 40003, 8080, SYN);
    let (ret, out) = f.run(PodProgram::ToPod, &syn);
    assert_eq!(ret, TC_ACT_REDIRECT, "redirected to the veth's ingress");
    assert_eq!(&out[0..6], &syn[6..12], "addressed to the veth's own MAC");
    assert_eq!(&out[12..], &syn[12..], "addresses and ports unchanged");
    // Later packets follow; the entry is not one the egress side (or the proxy) reads.
    let ack = packet(DNS, POD, TCP, 40003, 8080, ACK);
    assert_eq!(f.run(PodProgram::ToPod, &ack).0, TC_ACT_REDIRECT);
    assert!(
        f.redirects()
            .get(SocketAddrV4::new(DNS, 40003), TCP)
            .expect("map read")
            .is_none(),
        "an ingress entry must not look like the client's egress redirection"
    );
    // Allowed without a proxy port: delivered to the pod as it is.
    let plain = packet(DNS, POD, TCP, 40004, 8081, SYN);
    let (ret, out) = f.run(PodProgram::ToPod, &plain);
    assert_eq!((ret, out), (TC_ACT_OK, plain));
    // The proxy is gone (agent restarting): the connection goes to the pod (L4 allow).
    drop(proxy);
    let syn = packet(DNS, POD, TCP, 40005, 8080, SYN);
    let (ret, out) = f.run(PodProgram::ToPod, &syn);
    assert_eq!((ret, out), (TC_ACT_OK, syn));
}

/// Cilium redirects the whole port that has HTTP rules: a peer another entry allows there
/// (here an L3-only allow, no proxy port) is handed to the proxy through the port's marker
/// entry (`PORIN_POLICY_L7_PORT_IDENTITY`); the marker allows nobody by itself, and ports
/// without a marker are delivered as they are.
#[test]
fn ingress_connection_allowed_without_http_rules_follows_the_ports_marker() {
    use porin_core::datapath::abi::POLICY_L7_PORT_IDENTITY;

    let proxy = std::net::TcpListener::bind((NODE, 0)).expect("proxy socket");
    let proxy_port = proxy.local_addr().expect("proxy port").port();
    let mut f = Fixture::new();
    f.0.default_deny(EP_POD, INGRESS);
    // DNS's identity: every port, no HTTP rules. Port 8080 has HTTP rules for others.
    f.0.entry(
        key(EP_POD, INGRESS, ID_DNS, 0, 0),
        value(9, POLICY_ALLOW, 0),
    );
    f.0.entry(
        key(EP_POD, INGRESS, POLICY_L7_PORT_IDENTITY, TCP, 8080),
        value(9, POLICY_ALLOW, proxy_port),
    );
    let syn = packet(DNS, POD, TCP, 40006, 8080, SYN);
    let (ret, out) = f.run(PodProgram::ToPod, &syn);
    assert_eq!(
        ret, TC_ACT_REDIRECT,
        "allowed on a port with HTTP rules: to the proxy"
    );
    assert_eq!(&out[12..], &syn[12..], "addresses and ports unchanged");
    // Another port: delivered as it is.
    let plain = packet(DNS, POD, TCP, 40007, 8081, SYN);
    let (ret, out) = f.run(PodProgram::ToPod, &plain);
    assert_eq!((ret, out), (TC_ACT_OK, plain));
    // A peer nothing allows: the marker does not allow it (dropped, not redirected).
    let stranger = Ipv4Addr::new(10, 0, 0, 9);
    f.0.dp
        .ipcache()
        .expect("ipcache")
        .upsert(IpAddr::V4(stranger).into(), 1099, 0)
        .expect("ipcache");
    let (ret, _) = f.run(
        PodProgram::ToPod,
        &packet(stranger, POD, TCP, 40008, 8080, SYN),
    );
    assert_eq!(ret, TC_ACT_SHOT, "default deny");
}
