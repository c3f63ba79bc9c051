//! BPF_PROG_TEST_RUN tests of the policy verdict events of `bpf/pod.c`
//! (`bpf/lib/policy_verdict.h`): an allowed new connection emits a policy verdict naming the
//! deciding entry's `policy_id` and match type, a drop by a deny entry carries that entry's
//! id (181) and a default-deny drop none (133), and audit mode (`CFG_POLICY_AUDIT`) forwards
//! what it would drop with an AUDIT verdict.
//!
//! Needs root (CAP_BPF + CAP_NET_ADMIN) and bpffs; fails with a clear message otherwise.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use porin_core::datapath::{
    Datapath, DatapathConfig, EndpointInfo, EventReader, PodProgram, PolicyMaps,
    abi::{
        Direction, DropReason, EventType, FlowEvent, POLICY_ALLOW, POLICY_DENY, PolicyEpKey,
        PolicyKey, PolicyValue, Verdict, policy_match,
    },
    remove_node_pins, test_run,
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TCP: u8 = 6;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const EP_A: u32 = 11;
const EP_B: u32 = 12;
const ID_A: u32 = 1001;
const ID_B: u32 = 1002;
const INGRESS: u8 = 1;
const EGRESS: u8 = 2;

/// Ethernet + IPv4 + TCP (checksums are not checked on this path).
fn syn(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0, 0, 64, TCP, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(&l4);
    let mut eth = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    eth.extend_from_slice(&ip);
    eth
}

static NEXT: AtomicU32 = AtomicU32::new(0);

struct Fixture {
    dp: Datapath,
    policy: PolicyMaps,
    events: EventReader,
    pin_root: PathBuf,
    _rt: tokio::runtime::Runtime,
}

impl Fixture {
    /// Two local endpoints A and B in the ipcache, policy enabled (and audit mode if asked).
    fn new(audit: bool) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "policy verdict BPF_PROG_TEST_RUN tests must run as root (they load eBPF programs)"
        );
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pin_root = PathBuf::from(format!(
            "/sys/fs/bpf/porin-pvtest-{}-{n}",
            std::process::id()
        ));
        let config = DatapathConfig {
            node_name: "node-1".into(),
            pin_root: pin_root.clone(),
            switches: vec![
                ("CFG_ENABLE_POLICY".into(), 1),
                ("CFG_POLICY_AUDIT".into(), u32::from(audit)),
            ],
        };
        let dp = Datapath::load(&config).unwrap_or_else(|e| panic!("loading the datapath: {e}"));
        let mut endpoints = dp.endpoints().expect("endpoints map");
        let mut ipcache = dp.ipcache().expect("ipcache");
        for (addr, id, identity) in [(A, EP_A, ID_A), (B, EP_B, ID_B)] {
            let info = EndpointInfo {
                endpoint_id: id,
                ifindex: 100 + id,
                identity,
            };
            endpoints.upsert(IpAddr::V4(addr), info).expect("endpoint");
            ipcache
                .upsert(IpAddr::V4(addr).into(), identity, 0)
                .expect("ipcache");
        }
        let policy = PolicyMaps::open(|name| dp.map_pin_path(name)).expect("policy maps");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let events = {
            let _guard = rt.enter();
            dp.event_reader().expect("event reader")
        };
        Self {
            dp,
            policy,
            events,
            pin_root,
            _rt: rt,
        }
    }

    fn default_deny(&mut self, endpoint_id: u32, direction: u8) {
        let key = PolicyEpKey {
            endpoint_id,
            direction,
            pad: [0; 3],
        };
        self.policy
            .set_default_deny(key, true)
            .expect("default deny");
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
        let key = PolicyKey {
            endpoint_id,
            identity,
            dport,
            proto,
            direction,
        };
        let value = PolicyValue {
            policy_id,
            action,
            pad: 0,
            proxy_port: 0,
        };
        self.policy.upsert(key, value).expect("policy entry");
    }

    fn run(&self, program: PodProgram, packet: &[u8]) -> u32 {
        let fd = self.dp.program_fd(program).expect("program fd");
        test_run(fd, packet).expect("BPF_PROG_TEST_RUN").retval
    }

    fn drain(&mut self) -> Vec<FlowEvent> {
        std::iter::from_fn(|| self.events.try_next()).collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = remove_node_pins(&self.pin_root, "node-1");
        let _ = std::fs::remove_dir_all(&self.pin_root);
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
