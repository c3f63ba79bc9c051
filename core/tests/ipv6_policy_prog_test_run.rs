//! BPF_PROG_TEST_RUN tests of `bpf/pod.c` with IPv6 packets (dual stack, `enable_ipv6`):
//! enabling IPv6 must never open a way around policy.
//!
//! - a new IPv6 connection is decided like an IPv4 one: default deny drops it (133), an
//!   allow entry for the peer's identity lets it and its replies through;
//! - neighbour discovery (hop limit 255) and MLD from a link-local source pass untouched,
//!   like ARP, under default deny in both directions; the same ICMPv6 types without those
//!   marks (a routed packet) are decided by policy and dropped;
//! - an L7 (proxy) ingress rule drops IPv6 TCP (180: the proxy serves IPv4 only) instead of
//!   letting it through unfiltered.
//!
//! Needs root (CAP_BPF + CAP_NET_ADMIN) and bpffs; fails with a clear message otherwise.

mod common;

use std::net::{IpAddr, Ipv6Addr};

use common::pod_fixture::{
    EGRESS, INGRESS, PodFixture, TC_ACT_OK, TC_ACT_SHOT, endpoint, key, value,
};
use porin_core::datapath::{
    PodProgram,
    abi::{Direction, DropReason, EventType, POLICY_ALLOW},
};

const TCP: u8 = 6;
const ICMPV6: u8 = 58;
const SYN: u8 = 0x02;

const A: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 1, 0, 0, 0, 0, 5);
const B: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 2, 0, 0, 0, 0, 7);
const LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x42);
const SOLICITED_B: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 7);
const EP_A: u32 = 11;
const EP_B: u32 = 12;
const ID_A: u32 = 1001;
const ID_B: u32 = 1002;

/// Ethernet + IPv6 (`hop_limit`) + `l4` (checksums are not checked on this path).
fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, next: u8, hop_limit: u8, l4: &[u8]) -> Vec<u8> {
    let mut eth = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x86, 0xdd];
    eth.extend_from_slice(&[0x60, 0, 0, 0]);
    eth.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    eth.extend_from_slice(&[next, hop_limit]);
    eth.extend_from_slice(&src.octets());
    eth.extend_from_slice(&dst.octets());
    eth.extend_from_slice(l4);
    eth
}

fn tcp(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    l4.extend_from_slice(b"hello");
    ipv6_packet(src, dst, TCP, 64, &l4)
}

/// An ICMPv6 message of `icmp_type` carrying `target` (neighbour solicitation layout).
fn icmpv6(src: Ipv6Addr, dst: Ipv6Addr, icmp_type: u8, hop_limit: u8, target: Ipv6Addr) -> Vec<u8> {
    let mut l4 = vec![icmp_type, 0, 0, 0, 0, 0, 0, 0];
    l4.extend_from_slice(&target.octets());
    ipv6_packet(src, dst, ICMPV6, hop_limit, &l4)
}

struct Fixture(PodFixture);

impl std::ops::Deref for Fixture {
    type Target = PodFixture;
    fn deref(&self) -> &PodFixture {
        &self.0
    }
}

impl std::ops::DerefMut for Fixture {
    fn deref_mut(&mut self) -> &mut PodFixture {
        &mut self.0
    }
}

impl Fixture {
    /// Local endpoints A and B with IPv6 addresses in the endpoint map and the ipcache,
    /// policy enabled, default deny in both directions for both.
    fn new() -> Self {
        let mut f = Self(PodFixture::load(
            "v6",
            &[("CFG_ENABLE_POLICY", 1)],
            &[endpoint(A, EP_A, ID_A), endpoint(B, EP_B, ID_B)],
        ));
        for endpoint_id in [EP_A, EP_B] {
            for direction in [INGRESS, EGRESS] {
                f.default_deny(endpoint_id, direction);
            }
        }
        f
    }

    fn allow(&mut self, endpoint_id: u32, direction: u8, identity: u32, proxy_port: u16) {
        self.0.entry(
            key(endpoint_id, direction, identity, TCP, 80),
            value(42, POLICY_ALLOW, proxy_port),
        );
    }
}

#[test]
fn ipv6_connections_are_decided_by_policy_like_ipv4() {
    let mut f = Fixture::new();
    let syn = tcp(A, B, 40000, 80, SYN);
    assert_eq!(f.run(PodProgram::ToPod, &syn), TC_ACT_SHOT);
    let events = f.drain();
    let drop = events
        .iter()
        .find(|e| e.event_type == EventType::Drop)
        .unwrap_or_else(|| panic!("no drop event in {events:?}"));
    assert_eq!(drop.drop_reason, Some(DropReason::PolicyDenied));
    assert_eq!(drop.direction, Direction::Ingress);
    assert_eq!(drop.src, Some(IpAddr::V6(A)));
    assert_eq!(drop.dst, Some(IpAddr::V6(B)));
    assert_eq!(drop.src_identity, ID_A);
    assert_eq!(drop.dst_identity, ID_B);
    assert_eq!(f.drops(133), 1);

    f.allow(EP_A, EGRESS, ID_B, 0);
    f.allow(EP_B, INGRESS, ID_A, 0);
    assert_eq!(f.run(PodProgram::FromPod, &syn), TC_ACT_OK);
    assert_eq!(f.run(PodProgram::ToPod, &syn), TC_ACT_OK);
    let reply = tcp(B, A, 80, 40000, SYN | 0x10);
    assert_eq!(f.run(PodProgram::FromPod, &reply), TC_ACT_OK);
    assert_eq!(f.run(PodProgram::ToPod, &reply), TC_ACT_OK);
    // Another port of the same peer is still refused.
    assert_eq!(
        f.run(PodProgram::FromPod, &tcp(A, B, 40001, 81, SYN)),
        TC_ACT_SHOT
    );
    assert_eq!(f.drops(133), 2);
}

#[test]
fn neighbour_discovery_and_mld_pass_like_arp_but_only_on_the_link() {
    let f = Fixture::new();
    // Neighbour solicitation from the node's veth (link-local) to B's solicited-node
    // group, and B's advertisement back: hop limit 255, uncounted.
    let ns = icmpv6(LINK_LOCAL, SOLICITED_B, 135, 255, B);
    let na = icmpv6(B, LINK_LOCAL, 136, 255, B);
    assert_eq!(f.run(PodProgram::ToPod, &ns), TC_ACT_OK);
    assert_eq!(f.run(PodProgram::FromPod, &na), TC_ACT_OK);
    // MLDv2 report from a link-local source.
    let mld = icmpv6(
        LINK_LOCAL,
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x16),
        143,
        1,
        B,
    );
    assert_eq!(f.run(PodProgram::FromPod, &mld), TC_ACT_OK);
    assert_eq!(f.drops(133), 0);

    // The same messages without the link's marks are ordinary packets: policy decides.
    let routed_ns = icmpv6(A, B, 135, 64, B);
    assert_eq!(f.run(PodProgram::ToPod, &routed_ns), TC_ACT_SHOT);
    let global_mld = icmpv6(A, B, 143, 1, B);
    assert_eq!(f.run(PodProgram::ToPod, &global_mld), TC_ACT_SHOT);
    assert_eq!(f.drops(133), 2);
}

#[test]
fn an_l7_ingress_rule_drops_ipv6_instead_of_letting_it_through_unfiltered() {
    let mut f = Fixture::new();
    f.allow(EP_B, INGRESS, ID_A, 15001);
    let syn = tcp(A, B, 40000, 80, SYN);
    assert_eq!(f.run(PodProgram::ToPod, &syn), TC_ACT_SHOT);
    assert_eq!(f.drops(180), 1);
    // Without the proxy port the same entry allows it.
    f.allow(EP_B, INGRESS, ID_A, 0);
    assert_eq!(f.run(PodProgram::ToPod, &syn), TC_ACT_OK);
}

#[test]
fn encryption_strict_mode_drops_ipv6_to_other_nodes_pods() {
    let mut f = Fixture(PodFixture::load(
        "v6",
        &[("CFG_ENCRYPTION_STRICT", 1)],
        &[endpoint(A, EP_A, ID_A)],
    ));
    let node_v6 = Ipv6Addr::new(0xfd00, 0xffff, 0, 0, 0, 0, 0, 1);
    let outside = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9);
    // B is another node's pod; node_v6 is this node (reserved:host).
    f.identity_of(B.into(), ID_B);
    f.identity_of(node_v6.into(), 1);
    let syn_to = |dst| tcp(A, dst, 40000, 80, SYN);
    assert_eq!(
        f.run(PodProgram::FromPod, &syn_to(B)),
        TC_ACT_SHOT,
        "to another node's pod"
    );
    assert_eq!(
        f.run(PodProgram::FromPod, &syn_to(node_v6)),
        TC_ACT_OK,
        "to this node"
    );
    assert_eq!(
        f.run(PodProgram::FromPod, &syn_to(outside)),
        TC_ACT_OK,
        "to the world"
    );
    assert_eq!(f.drops(195), 1);
}
