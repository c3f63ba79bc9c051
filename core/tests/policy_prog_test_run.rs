//! BPF_PROG_TEST_RUN tests of policy enforcement in `bpf/pod.c` (`CFG_ENABLE_POLICY`):
//! default deny (133), allow entries, explicit deny winning (181), replies of allowed
//! connections, wildcard identity/port entries, and no conntrack entry for a refused one.
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
        PolicyKey, PolicyValue, Verdict,
    },
    remove_node_pins, test_run,
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
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
const INGRESS: u8 = 1;
const EGRESS: u8 = 2;

/// Ethernet + IPv4 + TCP/UDP (checksums are not checked on this path).
fn packet(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    if proto == TCP {
        l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        l4.extend_from_slice(&[0, 13, 0, 0]);
    }
    l4.extend_from_slice(b"hello");
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0, 0, 64, proto, 0, 0]);
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
    /// Two local endpoints A and B, both in the ipcache, policy enabled, maps empty.
    fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "policy BPF_PROG_TEST_RUN tests must run as root (they load eBPF programs)"
        );
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pin_root = PathBuf::from(format!(
            "/sys/fs/bpf/porin-poltest-{}-{n}",
            std::process::id()
        ));
        let config = DatapathConfig {
            node_name: "node-1".into(),
            pin_root: pin_root.clone(),
            switches: vec![("CFG_ENABLE_POLICY".into(), 1)],
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

    fn entry(
        &mut self,
        endpoint_id: u32,
        direction: u8,
        identity: u32,
        proto: u8,
        dport: u16,
        action: u8,
    ) {
        let key = PolicyKey {
            endpoint_id,
            identity,
            dport,
            proto,
            direction,
        };
        let value = PolicyValue {
            policy_id: 42,
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

    fn drops(&self, reason: u8) -> u64 {
        self.dp
            .counters()
            .expect("counters")
            .iter()
            .filter(|c| c.reason == reason)
            .map(|c| c.packets)
            .sum()
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

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = remove_node_pins(&self.pin_root, "node-1");
        let _ = std::fs::remove_dir_all(&self.pin_root);
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
