//! BPF_PROG_TEST_RUN tests of per-packet load balancing of IPv6 ClusterIPs in `bpf/pod.c`
//! (`bpf/lib/lb6.h`, dual stack): DNAT with a valid L4 checksum (through the IPv6
//! pseudo-header), reverse NAT of replies, a connection keeping its backend, the
//! no-backend drop with its ICMPv6 refusal, egress policy against the backend, and
//! `sessionAffinity: ClientIP` keyed by the client's IPv6 address.
//!
//! Needs root (CAP_BPF + CAP_NET_ADMIN) and bpffs; fails with a clear message otherwise.

mod common;

use common::packet6::{packet6, parse_checked6, parse_icmpv6_checked};
use common::pinned::PinnedDatapath;
use std::{
    collections::BTreeSet,
    net::{Ipv6Addr, SocketAddrV6},
};

use porin_core::datapath::{
    EndpointInfo, Lb6Frontend, Lb6Maps, PodProgram, PolicyMaps,
    abi::{
        LB_AFFINITY_TIMEOUT_SHIFT, LB_F_AFFINITY, LbAffinity6Key, LbAffinityValue, POLICY_ALLOW,
        PolicyEpKey, PolicyKey, PolicyValue,
    },
    test_run,
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
const TCP: u8 = 6;
const UDP: u8 = 17;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

const CLIENT: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 1, 0, 0, 0, 0, 5);
const VIP: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x50);
const BACKEND_A: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 1, 0, 0, 0, 0, 9);
const BACKEND_B: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 2, 0, 0, 0, 0, 9);

struct Fixture {
    dp: PinnedDatapath,
    lb6: Lb6Maps,
}

impl Fixture {
    fn new() -> Self {
        Self::with(vec![("CFG_ENABLE_LB".into(), 1)])
    }

    fn with(switches: Vec<(String, u32)>) -> Self {
        let dp = PinnedDatapath::load("lb6test", switches);
        let lb6 = Lb6Maps::open(|name| dp.map_pin_path(name)).expect("opening the IPv6 lb maps");
        Self { dp, lb6 }
    }

    /// A service at VIP:`port` with the given backends (ids 1..), backend ports 8080.
    fn service(&mut self, port: u16, proto: u8, backends: &[Ipv6Addr]) {
        for (i, b) in backends.iter().enumerate() {
            let id = i as u32 + 1;
            self.lb6
                .write_backend(id, SocketAddrV6::new(*b, 8080, 0, 0))
                .expect("backend");
            self.lb6.write_slot(7, i as u32, id).expect("slot");
        }
        let fe = Lb6Frontend {
            addr: SocketAddrV6::new(VIP, port, 0, 0),
            proto,
        };
        self.lb6
            .write_service(fe, 7, backends.len() as u32)
            .expect("service");
    }

    fn run(&self, program: PodProgram, packet: &[u8]) -> (u32, Vec<u8>) {
        let fd = self.dp.program_fd(program).expect("program fd");
        let out = test_run(fd, packet).expect("BPF_PROG_TEST_RUN");
        (out.retval, out.packet)
    }
}

fn sa(ip: Ipv6Addr, port: u16) -> SocketAddrV6 {
    SocketAddrV6::new(ip, port, 0, 0)
}

#[test]
fn tcp_to_an_ipv6_vip_is_dnated_and_the_reply_gets_the_vip_back() {
    let mut f = Fixture::new();
    f.service(80, TCP, &[BACKEND_A]);
    let (verdict, out) = f.run(
        PodProgram::FromPod,
        &packet6(CLIENT, VIP, TCP, 40000, 80, SYN),
    );
    assert_eq!(verdict, TC_ACT_OK);
    let (src, dst) = parse_checked6(&out);
    assert_eq!(src, sa(CLIENT, 40000));
    assert_eq!(dst, sa(BACKEND_A, 8080));

    // The backend's reply enters the client with the VIP as its source.
    let (verdict, out) = f.run(
        PodProgram::ToPod,
        &packet6(BACKEND_A, CLIENT, TCP, 8080, 40000, SYN | ACK),
    );
    assert_eq!(verdict, TC_ACT_OK);
    let (src, dst) = parse_checked6(&out);
    assert_eq!(src, sa(VIP, 80));
    assert_eq!(dst, sa(CLIENT, 40000));

    // Traffic that is not to a frontend is left alone.
    let other = packet6(CLIENT, BACKEND_B, TCP, 40001, 80, SYN);
    let (_, out) = f.run(PodProgram::FromPod, &other);
    assert_eq!(out, other);
}

#[test]
fn udp_is_dnated_with_a_valid_checksum_and_a_connection_keeps_its_backend() {
    let mut f = Fixture::new();
    f.service(53, UDP, &[BACKEND_A, BACKEND_B]);
    let mut seen = BTreeSet::new();
    for sport in 41000..41040 {
        let (verdict, out) = f.run(
            PodProgram::FromPod,
            &packet6(CLIENT, VIP, UDP, sport, 53, 0),
        );
        assert_eq!(verdict, TC_ACT_OK);
        let (_, dst) = parse_checked6(&out);
        assert_eq!(dst.port(), 8080);
        seen.insert(*dst.ip());
        // The same flow again: the same backend.
        let (_, again) = f.run(
            PodProgram::FromPod,
            &packet6(CLIENT, VIP, UDP, sport, 53, 0),
        );
        assert_eq!(
            parse_checked6(&again).1,
            dst,
            "flow {sport} changed backend"
        );
    }
    assert_eq!(
        seen,
        BTreeSet::from([BACKEND_A, BACKEND_B]),
        "both backends serve"
    );
}

#[test]
fn an_ipv6_frontend_without_backends_drops_and_refuses_with_icmpv6() {
    let mut f = Fixture::new();
    f.service(80, TCP, &[]);
    let syn = packet6(CLIENT, VIP, TCP, 40000, 80, SYN);
    let (verdict, out) = f.run(PodProgram::FromPod, &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT, "sent back into the pod");
    let (src, dst, icmp_type, code, quote) = parse_icmpv6_checked(&out);
    assert_eq!((src, dst), (VIP, CLIENT), "from the VIP to the client");
    assert_eq!(
        (icmp_type, code),
        (1, 4),
        "destination unreachable: port unreachable"
    );
    assert_eq!(
        quote,
        syn[14..14 + 48].to_vec(),
        "quotes the offending packet"
    );
    let dropped: u64 =
        f.dp.counters()
            .expect("counters")
            .iter()
            .filter(|c| c.reason == 158)
            .map(|c| c.packets)
            .sum();
    assert_eq!(dropped, 1, "SERVICE_BACKEND_NOT_FOUND");
}

#[test]
fn egress_policy_decides_an_ipv6_service_connection_against_its_backend() {
    const EP: u32 = 11;
    const ID_CLIENT: u32 = 1001;
    const ID_BACKEND: u32 = 1002;
    let mut f = Fixture::with(vec![
        ("CFG_ENABLE_LB".into(), 1),
        ("CFG_ENABLE_POLICY".into(), 1),
    ]);
    f.service(80, TCP, &[BACKEND_A]);
    let mut endpoints = f.dp.endpoints().expect("endpoints map");
    let info = EndpointInfo {
        endpoint_id: EP,
        ifindex: 100,
        identity: ID_CLIENT,
    };
    endpoints
        .upsert(std::net::IpAddr::V6(CLIENT), info)
        .expect("endpoint");
    let mut ipcache = f.dp.ipcache().expect("ipcache");
    for (ip, id) in [(CLIENT, ID_CLIENT), (BACKEND_A, ID_BACKEND)] {
        ipcache
            .upsert(std::net::IpAddr::V6(ip).into(), id, 0)
            .expect("ipcache");
    }
    let mut policy = PolicyMaps::open(|name| f.dp.map_pin_path(name)).expect("policy maps");
    let ep_key = PolicyEpKey {
        endpoint_id: EP,
        direction: 2,
        pad: [0; 3],
    };
    policy.set_default_deny(ep_key, true).expect("default deny");
    let allow = |identity: u32, dport: u16| {
        (
            PolicyKey {
                endpoint_id: EP,
                identity,
                dport,
                proto: TCP,
                direction: 2,
            },
            PolicyValue {
                policy_id: 1,
                action: POLICY_ALLOW,
                pad: 0,
                proxy_port: 0,
            },
        )
    };
    // Allowing the world (the VIP's own identity) on the service port lets nothing through:
    // the connection is decided against the backend.
    let (k, v) = allow(2, 80);
    policy.upsert(k, v).expect("entry");
    let syn = packet6(CLIENT, VIP, TCP, 40000, 80, SYN);
    assert_eq!(f.run(PodProgram::FromPod, &syn).0, TC_ACT_SHOT);
    // Allowing the backend's identity on the backend's port does.
    let (k, v) = allow(ID_BACKEND, 8080);
    policy.upsert(k, v).expect("entry");
    let (verdict, out) = f.run(PodProgram::FromPod, &syn);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(parse_checked6(&out).1, sa(BACKEND_A, 8080));
}

/// The affinity key of `client` for service 7 (per-packet LB: keyed by the IPv6 address).
fn affinity_key(client: Ipv6Addr) -> LbAffinity6Key {
    LbAffinity6Key {
        client: client.octets(),
        service_id: 7,
        netns_cookie: 0,
        pad: [0; 3],
    }
}

#[test]
fn client_ip_affinity_keeps_an_ipv6_client_on_its_backend_until_the_timeout() {
    const BACKEND_C: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 3, 0, 0, 0, 0, 9);
    let mut f = Fixture::new();
    f.service(80, TCP, &[BACKEND_A, BACKEND_B]);
    let syn = |client: Ipv6Addr, sport: u16| packet6(client, VIP, TCP, sport, 80, SYN);
    let dst_of = |f: &Fixture, client: Ipv6Addr, sport: u16| {
        parse_checked6(&f.run(PodProgram::FromPod, &syn(client, sport)).1).1
    };
    // Without affinity nothing is recorded.
    dst_of(&f, CLIENT, 49000);
    assert!(f.lb6.affinity.entries().expect("affinity map").is_empty());

    let timeout = 60;
    let fe = Lb6Frontend {
        addr: sa(VIP, 80),
        proto: TCP,
    };
    f.lb6
        .write_service_flags(
            fe,
            7,
            2,
            LB_F_AFFINITY | (timeout << LB_AFFINITY_TIMEOUT_SHIFT),
        )
        .expect("affinity on");

    // Every new connection of one client (new source ports) reaches the same backend.
    let first = dst_of(&f, CLIENT, 50000);
    for sport in 50001..50033 {
        assert_eq!(
            dst_of(&f, CLIENT, sport),
            first,
            "connection from port {sport}"
        );
    }
    let entries = f.lb6.affinity.entries().expect("affinity map");
    let (_, entry) = entries
        .iter()
        .find(|(k, _)| *k == affinity_key(CLIENT))
        .copied()
        .expect("an entry keyed by the client's IPv6 address");
    assert_eq!(
        entry.backend_id,
        if *first.ip() == BACKEND_A { 1 } else { 2 }
    );

    // Different clients are bound independently: together they reach both backends.
    let mut seen = BTreeSet::new();
    for i in 0..48u16 {
        let client = Ipv6Addr::new(0xfd00, 0x10, 9, 0, 0, 0, 0, i + 1);
        let a = dst_of(&f, client, 51000);
        assert_eq!(dst_of(&f, client, 51001), a, "client {client}");
        seen.insert(*a.ip());
    }
    assert_eq!(seen, BTreeSet::from([BACKEND_A, BACKEND_B]));

    // A recorded binding is honoured (backend 3 is no slot of the service: only affinity
    // can send a client there)...
    f.lb6
        .write_backend(3, sa(BACKEND_C, 8080))
        .expect("backend");
    let bind = |f: &mut Fixture, last_used_ns: u64, backend_id: u32| {
        let value = LbAffinityValue {
            last_used_ns,
            backend_id,
            pad: 0,
        };
        f.lb6
            .affinity
            .set(affinity_key(CLIENT), value)
            .expect("affinity entry");
    };
    let now = entry.last_used_ns;
    bind(&mut f, now, 3);
    assert_eq!(dst_of(&f, CLIENT, 52000), sa(BACKEND_C, 8080));

    // ...until it is older than the timeout: then the client chooses again among the slots.
    bind(
        &mut f,
        now.saturating_sub(u64::from(timeout + 1) * 1_000_000_000),
        3,
    );
    let dst = dst_of(&f, CLIENT, 52001);
    assert!(
        [BACKEND_A, BACKEND_B].contains(dst.ip()),
        "an expired binding was used: {dst}"
    );

    // A backend that is gone is not used even within the timeout.
    bind(&mut f, now, 42);
    let dst = dst_of(&f, CLIENT, 52002);
    assert!([BACKEND_A, BACKEND_B].contains(dst.ip()), "{dst}");
}
