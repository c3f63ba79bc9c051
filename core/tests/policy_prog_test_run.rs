//! BPF_PROG_TEST_RUN tests of policy enforcement in `bpf/pod.c` (`CFG_ENABLE_POLICY`):
//! default deny (133), allow entries, explicit deny winning (181), replies of allowed
//! connections, wildcard identity/port entries, and no conntrack entry for a refused one.
//!
//! Needs root (CAP_BPF + CAP_NET_ADMIN) and bpffs; fails with a clear message otherwise.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::packet::packet;
use common::pod_fixture::{
    EGRESS, INGRESS, PodFixture, TC_ACT_OK, TC_ACT_SHOT, endpoint, key, value,
};
use porin_core::datapath::{
    PodProgram,
    abi::{Direction, DropReason, EventType, FlowEvent, POLICY_ALLOW, POLICY_DENY, Verdict},
};

const TCP: u8 = 6;
const UDP: u8 = 17;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
const EP_A: u32 = 11;
const EP_B: u32 = 12;
const ID_A: u32 = 1001;
const ID_B: u32 = 1002;

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
    /// Two local endpoints A and B, both in the ipcache, policy enabled, maps empty.
    fn new() -> Self {
        let endpoints = [endpoint(A, EP_A, ID_A), endpoint(B, EP_B, ID_B)];
        Self(PodFixture::load(
            "pol",
            &[("CFG_ENABLE_POLICY", 1)],
            &endpoints,
        ))
    }

    fn entry(
        &mut self,
        endpoint_id: u32,
        direction: u8,
        identity: u32,
        proto: u8,
        dport: u16,
        action: u8,
    ) {
        self.0.entry(
            key(endpoint_id, direction, identity, proto, dport),
            value(42, action, 0),
        );
    }

    /// Conntrack entries between two addresses, in either order.
    fn ct_entries(&self, x: Ipv4Addr, y: Ipv4Addr) -> usize {
        let (_, xa) = porin_core::datapath::abi::encode_addr(IpAddr::V4(x));
        let (_, ya) = porin_core::datapath::abi::encode_addr(IpAddr::V4(y));
        self.dp
            .conntrack()
            .expect("conntrack")
            .entries()
            .expect("entries")
            .iter()
            .filter(|(k, _)| (k.saddr == xa && k.daddr == ya) || (k.saddr == ya && k.daddr == xa))
            .count()
    }
}

fn assert_drop(events: &[FlowEvent], reason: DropReason, direction: Direction) {
    let drop = events
        .iter()
        .find(|e| e.event_type == EventType::Drop)
        .unwrap_or_else(|| panic!("no drop event in {events:?}"));
    assert_eq!(drop.verdict, Verdict::Dropped);
    assert_eq!(drop.drop_reason, Some(reason));
    assert_eq!(drop.direction, direction);
    assert_eq!(drop.src, Some(IpAddr::V4(A)));
    assert_eq!(drop.src_identity, ID_A);
}

#[test]
fn new_connection_under_default_deny_is_dropped_with_133_and_leaves_no_conntrack() {
    let mut f = Fixture::new();
    f.default_deny(EP_B, INGRESS);
    let syn = packet(A, B, TCP, 40000, 80, SYN);
    assert_eq!(f.run(PodProgram::ToPod, &syn), TC_ACT_SHOT);
    assert_drop(&f.drain(), DropReason::PolicyDenied, Direction::Ingress);
    assert_eq!(f.drops(133), 1);
    assert_eq!(
        f.ct_entries(A, B),
        0,
        "a refused connection leaves no conntrack entry"
    );
    // Again: still refused (no entry was left to let it through).
    assert_eq!(f.run(PodProgram::ToPod, &syn), TC_ACT_SHOT);
    assert_eq!(f.drops(133), 2);
    // Egress of A is not in default deny: from-pod passes.
    assert_eq!(f.run(PodProgram::FromPod, &syn), TC_ACT_OK);
}

#[test]
fn allowed_connection_and_its_replies_pass() {
    let mut f = Fixture::new();
    for (ep, dir) in [
        (EP_A, INGRESS),
        (EP_A, EGRESS),
        (EP_B, INGRESS),
        (EP_B, EGRESS),
    ] {
        f.default_deny(ep, dir);
    }
    f.entry(EP_A, EGRESS, ID_B, TCP, 80, POLICY_ALLOW);
    f.entry(EP_B, INGRESS, ID_A, TCP, 80, POLICY_ALLOW);
    // A's veth (from-pod), then B's veth (to-pod): both decide the new connection.
    let syn = packet(A, B, TCP, 40000, 80, SYN);
    assert_eq!(f.run(PodProgram::FromPod, &syn), TC_ACT_OK);
    assert_eq!(f.run(PodProgram::ToPod, &syn), TC_ACT_OK);
    // The reply leaves B (egress of B: default deny, no entry) and enters A (ingress of A:
    // default deny, no entry): replies pass.
    let reply = packet(B, A, TCP, 80, 40000, SYN | ACK);
    assert_eq!(f.run(PodProgram::FromPod, &reply), TC_ACT_OK);
    assert_eq!(f.run(PodProgram::ToPod, &reply), TC_ACT_OK);
    let ack = packet(A, B, TCP, 40000, 80, ACK);
    assert_eq!(f.run(PodProgram::FromPod, &ack), TC_ACT_OK);
    assert_eq!(f.run(PodProgram::ToPod, &ack), TC_ACT_OK);
    assert_eq!(f.drops(133) + f.drops(181), 0);
    // One entry per side of the connection (conntrack is scoped by endpoint with policy).
    assert_eq!(f.ct_entries(A, B), 2);
    // Another port is still refused, at A's egress.
    let other = packet(A, B, TCP, 40001, 81, SYN);
    assert_eq!(f.run(PodProgram::FromPod, &other), TC_ACT_SHOT);
    assert_drop(&f.drain(), DropReason::PolicyDenied, Direction::Egress);
    // A peer outside the cluster (world) is refused at egress.
    let world = packet(A, OUTSIDE, TCP, 40002, 80, SYN);
    assert_eq!(f.run(PodProgram::FromPod, &world), TC_ACT_SHOT);
}

#[test]
fn explicit_deny_wins_over_any_allow_with_181() {
    let mut f = Fixture::new();
    f.default_deny(EP_B, INGRESS);
    // Allow everything from anyone, deny A on TCP/80.
    f.entry(EP_B, INGRESS, 0, 0, 0, POLICY_ALLOW);
    f.entry(EP_B, INGRESS, ID_A, TCP, 80, POLICY_DENY);
    assert_eq!(
        f.run(PodProgram::ToPod, &packet(A, B, TCP, 40000, 80, SYN)),
        TC_ACT_SHOT
    );
    assert_drop(&f.drain(), DropReason::PolicyDeny, Direction::Ingress);
    assert_eq!(f.drops(181), 1);
    assert_eq!(f.ct_entries(A, B), 0);
    assert_eq!(
        f.run(PodProgram::ToPod, &packet(A, B, TCP, 40000, 81, SYN)),
        TC_ACT_OK
    );
    // A deny without default deny still denies; a deny for any port covers every port.
    let mut f = Fixture::new();
    f.entry(EP_B, INGRESS, ID_A, UDP, 0, POLICY_DENY);
    assert_eq!(
        f.run(PodProgram::ToPod, &packet(A, B, UDP, 5000, 53, 0)),
        TC_ACT_SHOT
    );
    assert_eq!(
        f.run(PodProgram::ToPod, &packet(A, B, TCP, 5000, 53, SYN)),
        TC_ACT_OK
    );
}

#[test]
fn wildcard_identity_and_port_entries_match() {
    let mut f = Fixture::new();
    f.default_deny(EP_B, INGRESS);
    // Any identity on TCP/80; A on any TCP port... of UDP: A on UDP any port.
    f.entry(EP_B, INGRESS, 0, TCP, 80, POLICY_ALLOW);
    f.entry(EP_B, INGRESS, ID_A, UDP, 0, POLICY_ALLOW);
    let cases = [
        (A, TCP, 80, TC_ACT_OK),
        (OUTSIDE, TCP, 80, TC_ACT_OK),
        (A, TCP, 81, TC_ACT_SHOT),
        (A, UDP, 9999, TC_ACT_OK),
        (OUTSIDE, UDP, 9999, TC_ACT_SHOT),
    ];
    for (i, (src, proto, port, want)) in cases.into_iter().enumerate() {
        let flags = if proto == TCP { SYN } else { 0 };
        let got = f.run(
            PodProgram::ToPod,
            &packet(src, B, proto, 30000 + i as u16, port, flags),
        );
        assert_eq!(got, want, "{src} proto {proto} port {port}");
    }
    assert_eq!(f.drops(133), 2);
}
