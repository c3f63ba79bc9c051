//! BPF_PROG_TEST_RUN tests of the policy verdict events of `bpf/pod.c`
//! (`bpf/lib/policy_verdict.h`): an allowed new connection emits a policy verdict naming the
//! deciding entry's `policy_id` and match type, a drop by a deny entry carries that entry's
//! id (181) and a default-deny drop none (133), and audit mode (`CFG_POLICY_AUDIT`) forwards
//! what it would drop with an AUDIT verdict.
//!
//! Needs root (CAP_BPF + CAP_NET_ADMIN) and bpffs; fails with a clear message otherwise.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::pod_fixture::{
    EGRESS, INGRESS, PodFixture, TC_ACT_OK, TC_ACT_SHOT, endpoint, key, value,
};
use porin_core::datapath::{
    PodProgram,
    abi::{
        Direction, DropReason, EventType, FlowEvent, POLICY_ALLOW, POLICY_DENY, Verdict,
        policy_match,
    },
};

const TCP: u8 = 6;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const EP_A: u32 = 11;
const EP_B: u32 = 12;
const ID_A: u32 = 1001;
const ID_B: u32 = 1002;

/// A TCP segment with real checksums.
fn syn(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    common::packet::packet(src, dst, TCP, sport, dport, flags)
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
    /// Two local endpoints A and B in the ipcache, policy enabled (and audit mode if asked).
    fn new(audit: bool) -> Self {
        let endpoints = [endpoint(A, EP_A, ID_A), endpoint(B, EP_B, ID_B)];
        Self(PodFixture::load(
            "pv",
            &[
                ("CFG_ENABLE_POLICY", 1),
                ("CFG_POLICY_AUDIT", u32::from(audit)),
            ],
            &endpoints,
        ))
    }

    #[expect(clippy::too_many_arguments, reason = "one map entry, field by field")]
    fn entry(
        &mut self,
        endpoint_id: u32,
        direction: u8,
        identity: u32,
        proto: u8,
        dport: u16,
        action: u8,
        policy_id: u32,
    ) {
        self.0.entry(
            key(endpoint_id, direction, identity, proto, dport),
            value(policy_id, action, 0),
        );
    }
}

fn of_type(events: &[FlowEvent], t: EventType) -> Vec<&FlowEvent> {
    events.iter().filter(|e| e.event_type == t).collect()
}

#[test]
fn allowed_new_connections_emit_a_verdict_naming_the_deciding_entry() {
    let mut f = Fixture::new(false);
    f.default_deny(EP_A, EGRESS);
    f.default_deny(EP_B, INGRESS);
    // A's egress: B on TCP/80 (L3-L4); B's ingress: anyone on TCP/80 (L4-only), and A on
    // any port (L3-only), which is less specific than the L4 entry.
    f.entry(EP_A, EGRESS, ID_B, TCP, 80, POLICY_ALLOW, 0x1111);
    f.entry(EP_B, INGRESS, 0, TCP, 80, POLICY_ALLOW, 0x2222);
    f.entry(EP_B, INGRESS, ID_A, 0, 0, POLICY_ALLOW, 0x3333);

    assert_eq!(
        f.run(PodProgram::FromPod, &syn(A, B, 40000, 80, SYN)),
        TC_ACT_OK
    );
    let events = f.drain();
    assert_eq!(
        events.iter().map(|e| e.event_type).collect::<Vec<_>>(),
        [EventType::PolicyVerdict, EventType::NewConnection],
        "the verdict comes before the connection's trace event: {events:?}"
    );
    let v = &events[0];
    assert_eq!(v.verdict, Verdict::Forwarded);
    assert_eq!(v.direction, Direction::Egress);
    assert_eq!((v.policy_id, v.policy_match), (0x1111, policy_match::L3_L4));
    assert_eq!((v.src, v.dst_port), (Some(IpAddr::V4(A)), 80));
    assert_eq!(v.drop_reason, None);
    assert_eq!(events[1].policy_id, 0, "trace events name no policy");

    assert_eq!(
        f.run(PodProgram::ToPod, &syn(A, B, 40000, 80, SYN)),
        TC_ACT_OK
    );
    let events = f.drain();
    let verdicts = of_type(&events, EventType::PolicyVerdict);
    assert_eq!(verdicts.len(), 1, "{events:?}");
    assert_eq!(verdicts[0].direction, Direction::Ingress);
    assert_eq!(
        (verdicts[0].policy_id, verdicts[0].policy_match),
        (0x2222, policy_match::L4_ONLY)
    );

    // Another port: only the L3-only entry matches.
    assert_eq!(
        f.run(PodProgram::ToPod, &syn(A, B, 40001, 9000, SYN)),
        TC_ACT_OK
    );
    let events = f.drain();
    let verdicts = of_type(&events, EventType::PolicyVerdict);
    assert_eq!(
        (verdicts[0].policy_id, verdicts[0].policy_match),
        (0x3333, policy_match::L3_ONLY)
    );

    // Replies and established packets are not decided: no verdict.
    assert_eq!(
        f.run(PodProgram::FromPod, &syn(B, A, 80, 40000, SYN | ACK)),
        TC_ACT_OK
    );
    assert_eq!(
        f.run(PodProgram::FromPod, &syn(A, B, 40000, 80, ACK)),
        TC_ACT_OK
    );
    let events = f.drain();
    assert!(
        of_type(&events, EventType::PolicyVerdict).is_empty(),
        "{events:?}"
    );

    // An endpoint direction without default deny and without entries: no verdict.
    assert_eq!(
        f.run(PodProgram::ToPod, &syn(B, A, 5000, 22, SYN)),
        TC_ACT_OK
    );
    let events = f.drain();
    assert!(
        of_type(&events, EventType::PolicyVerdict).is_empty(),
        "{events:?}"
    );
}

#[test]
fn a_deny_entry_names_itself_in_the_drop_and_default_deny_names_none() {
    let mut f = Fixture::new(false);
    f.default_deny(EP_B, INGRESS);
    f.entry(EP_B, INGRESS, 0, 0, 0, POLICY_ALLOW, 0x1);
    f.entry(EP_B, INGRESS, ID_A, TCP, 0, POLICY_DENY, 0xdead);
    assert_eq!(
        f.run(PodProgram::ToPod, &syn(A, B, 40000, 443, SYN)),
        TC_ACT_SHOT
    );
    let events = f.drain();
    assert_eq!(events.len(), 1, "one drop event, no verdict: {events:?}");
    let d = &events[0];
    assert_eq!(d.event_type, EventType::Drop);
    assert_eq!(d.drop_reason, Some(DropReason::PolicyDeny));
    assert_eq!(
        (d.policy_id, d.policy_match),
        (0xdead, policy_match::L3_PROTO)
    );

    let mut f = Fixture::new(false);
    f.default_deny(EP_B, INGRESS);
    f.entry(EP_B, INGRESS, ID_A, TCP, 80, POLICY_ALLOW, 0x1);
    assert_eq!(
        f.run(PodProgram::ToPod, &syn(A, B, 40000, 81, SYN)),
        TC_ACT_SHOT
    );
    let events = f.drain();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].drop_reason, Some(DropReason::PolicyDenied));
    assert_eq!(
        (events[0].policy_id, events[0].policy_match),
        (0, policy_match::NONE)
    );
}

#[test]
fn audit_mode_forwards_refused_connections_with_an_audit_verdict() {
    let mut f = Fixture::new(true);
    f.default_deny(EP_B, INGRESS);
    f.entry(EP_B, INGRESS, ID_A, TCP, 22, POLICY_DENY, 0xbeef);
    // Default deny, no entry: forwarded, audited with 133 and no policy.
    assert_eq!(
        f.run(PodProgram::ToPod, &syn(A, B, 40000, 80, SYN)),
        TC_ACT_OK
    );
    let events = f.drain();
    let v = of_type(&events, EventType::PolicyVerdict);
    assert_eq!(v.len(), 1, "{events:?}");
    assert_eq!(v[0].verdict, Verdict::Audit);
    assert_eq!(v[0].drop_reason, Some(DropReason::PolicyDenied));
    assert_eq!(v[0].policy_id, 0);
    assert!(of_type(&events, EventType::Drop).is_empty(), "{events:?}");
    assert_eq!(of_type(&events, EventType::NewConnection).len(), 1);
    // The deny entry: audited with 181 and the entry's id.
    assert_eq!(
        f.run(PodProgram::ToPod, &syn(A, B, 40001, 22, SYN)),
        TC_ACT_OK
    );
    let events = f.drain();
    let v = of_type(&events, EventType::PolicyVerdict);
    assert_eq!(v[0].verdict, Verdict::Audit);
    assert_eq!(v[0].drop_reason, Some(DropReason::PolicyDeny));
    assert_eq!(
        (v[0].policy_id, v[0].policy_match),
        (0xbeef, policy_match::L3_L4)
    );
}
