//! BPF_PROG_TEST_RUN tests of per-packet load balancing in `bpf/pod.c` (`CFG_ENABLE_LB`):
//! DNAT with valid checksums, reverse NAT of replies, affinity, and the no-backend refusal.
//!
//! Needs root (CAP_BPF + CAP_NET_ADMIN) and bpffs; fails with a clear message otherwise.

mod common;

use common::packet::{packet, parse_checked};
use common::pinned::PinnedDatapath;
use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, SocketAddrV4},
};

use porin_core::datapath::{
    EventReader, LbFrontend, LbMaps, PodProgram,
    abi::{
        CtKey, Direction, DropReason, EventType, FlowEvent, LB_AFFINITY_TIMEOUT_SHIFT,
        LB_F_AFFINITY, LbAffinityKey, LbAffinityValue, LbSvcValue, encode_addr,
    },
    test_run,
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_REDIRECT: u32 = 7;
const TCP: u8 = 6;
const UDP: u8 = 17;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 50);
const BACKEND_A: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 9);
const BACKEND_B: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 9);
const BACKEND_C: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 9);

// ---- fixture -------------------------------------------------------------------------

struct Fixture {
    dp: PinnedDatapath,
    lb: LbMaps,
    events: EventReader,
    _rt: tokio::runtime::Runtime,
}

impl Fixture {
    fn new(enable_lb: bool) -> Self {
        let dp = PinnedDatapath::load(
            "lbtest",
            vec![("CFG_ENABLE_LB".into(), u32::from(enable_lb))],
        );
        let lb = LbMaps::open(|name| dp.map_pin_path(name)).expect("opening the lb maps");
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
            lb,
            events,
            _rt: rt,
        }
    }

    /// A service with the given backends (ids 1..), backend ports 8080.
    fn service(&mut self, vip: Ipv4Addr, port: u16, proto: u8, backends: &[Ipv4Addr]) {
        let fe = LbFrontend {
            addr: SocketAddrV4::new(vip, port),
            proto,
        };
        for (i, b) in backends.iter().enumerate() {
            let id = i as u32 + 1;
            self.lb
                .upsert_backend(id, SocketAddrV4::new(*b, 8080))
                .expect("backend");
            self.lb.set_slot(7, i as u32, id).expect("slot");
        }
        self.lb
            .upsert_service(fe, 7, backends.len() as u32)
            .expect("service");
    }

    fn run(&self, program: PodProgram, packet: &[u8]) -> (u32, Vec<u8>) {
        let fd = self.dp.program_fd(program).expect("program fd");
        let out = test_run(fd, packet).expect("BPF_PROG_TEST_RUN");
        (out.retval, out.packet)
    }

    fn drain(&mut self) -> Vec<FlowEvent> {
        std::iter::from_fn(|| self.events.try_next()).collect()
    }
}

fn ct_key(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, proto: u8) -> CtKey {
    let (family, saddr) = encode_addr(IpAddr::V4(src));
    let (_, daddr) = encode_addr(IpAddr::V4(dst));
    CtKey {
        saddr,
        daddr,
        sport,
        dport,
        family,
        l4_proto: proto,
        pad: [0; 2],
    }
}

// ---- tests ---------------------------------------------------------------------------

#[test]
fn dnat_and_reverse_nat_keep_checksums_valid() {
    for proto in [TCP, UDP] {
        let mut f = Fixture::new(true);
        f.service(VIP, 80, proto, &[BACKEND_A]);

        let out = f.run(
            PodProgram::FromPod,
            &packet(CLIENT, VIP, proto, 40000, 80, SYN),
        );
        assert_eq!(out.0, TC_ACT_OK);
        let fwd = parse_checked(&out.1);
        assert_eq!(fwd.src, SocketAddrV4::new(CLIENT, 40000), "proto {proto}");
        assert_eq!(fwd.dst, SocketAddrV4::new(BACKEND_A, 8080), "proto {proto}");

        // Conntrack and the flow event on the client's veth see the service address.
        let ct = f.dp.conntrack().expect("conntrack");
        assert!(
            ct.get(&ct_key(CLIENT, VIP, 40000, 80, proto))
                .expect("ct")
                .is_some(),
            "conntrack keeps the untranslated tuple"
        );
        let events = f.drain();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].dst, Some(IpAddr::V4(VIP)));
        assert_eq!(events[0].dst_port, 80);

        // The reply entering the client comes from the VIP again.
        let reply = packet(BACKEND_A, CLIENT, proto, 8080, 40000, SYN | ACK);
        let out = f.run(PodProgram::ToPod, &reply);
        assert_eq!(out.0, TC_ACT_OK);
        let back = parse_checked(&out.1);
        assert_eq!(back.src, SocketAddrV4::new(VIP, 80), "proto {proto}");
        assert_eq!(back.dst, SocketAddrV4::new(CLIENT, 40000));
        let entry = ct
            .get(&ct_key(CLIENT, VIP, 40000, 80, proto))
            .expect("ct")
            .expect("entry");
        assert_eq!(
            entry.packets,
            [1, 1],
            "the reply matched the client's entry"
        );

        // Traffic to a non-service address is untouched.
        let other = packet(CLIENT, BACKEND_B, proto, 40001, 80, SYN);
        let out = f.run(PodProgram::FromPod, &other);
        assert_eq!(out, (TC_ACT_OK, other.clone()));
    }
}

#[test]
fn a_connection_keeps_its_backend_and_new_ones_spread() {
    let mut f = Fixture::new(true);
    f.service(VIP, 80, TCP, &[BACKEND_A, BACKEND_B]);

    let syn = packet(CLIENT, VIP, TCP, 41000, 80, SYN);
    let first = parse_checked(&f.run(PodProgram::FromPod, &syn).1).dst;
    let ack = packet(CLIENT, VIP, TCP, 41000, 80, ACK);
    for _ in 0..30 {
        let dst = parse_checked(&f.run(PodProgram::FromPod, &ack).1).dst;
        assert_eq!(dst, first, "later packets go to the same backend");
    }

    let mut seen = BTreeSet::new();
    for sport in 42000..42064 {
        let out = f.run(
            PodProgram::FromPod,
            &packet(CLIENT, VIP, TCP, sport, 80, SYN),
        );
        seen.insert(*parse_checked(&out.1).dst.ip());
    }
    assert_eq!(
        seen,
        BTreeSet::from([BACKEND_A, BACKEND_B]),
        "64 connections reach both backends"
    );

    // A removed backend stops being chosen, even for a connection that had it.
    f.lb.set_slot(7, 0, 2).expect("slot");
    f.lb.upsert_service(
        LbFrontend {
            addr: SocketAddrV4::new(VIP, 80),
            proto: TCP,
        },
        7,
        1,
    )
    .expect("service");
    f.lb.remove_slot(7, 1).expect("slot");
    f.lb.remove_backend(1).expect("backend");
    // New connections (a SYN, even one reusing an old tuple) only reach what is left.
    for sport in [41000, 43000, 43001] {
        let out = f.run(
            PodProgram::FromPod,
            &packet(CLIENT, VIP, TCP, sport, 80, SYN),
        );
        assert_eq!(*parse_checked(&out.1).dst.ip(), BACKEND_B);
    }
}

#[test]
fn an_established_connection_finishes_on_a_backend_that_left_the_service() {
    let mut f = Fixture::new(true);
    f.service(VIP, 80, TCP, &[BACKEND_A]);
    let syn = packet(CLIENT, VIP, TCP, 44000, 80, SYN);
    assert_eq!(
        parse_checked(&f.run(PodProgram::FromPod, &syn).1).dst,
        SocketAddrV4::new(BACKEND_A, 8080)
    );

    // A replaces B in the service (slot 0 now points at a new backend id 2).
    f.lb.upsert_backend(2, SocketAddrV4::new(BACKEND_B, 8080))
        .expect("backend");
    f.lb.set_slot(7, 0, 2).expect("slot");
    f.lb.remove_backend(1).expect("backend");

    let ack = packet(CLIENT, VIP, TCP, 44000, 80, ACK);
    assert_eq!(
        parse_checked(&f.run(PodProgram::FromPod, &ack).1).dst,
        SocketAddrV4::new(BACKEND_A, 8080),
        "the established connection stays on its backend"
    );
    let new = packet(CLIENT, VIP, TCP, 44001, 80, SYN);
    assert_eq!(
        parse_checked(&f.run(PodProgram::FromPod, &new).1).dst,
        SocketAddrV4::new(BACKEND_B, 8080),
        "a new connection only reaches the current backend"
    );
}

#[test]
fn a_service_without_backends_is_refused_with_a_drop_event() {
    let mut f = Fixture::new(true);
    f.service(VIP, 80, TCP, &[]);

    let syn = packet(CLIENT, VIP, TCP, 40000, 80, SYN);
    let (ret, out) = f.run(PodProgram::FromPod, &syn);
    assert_eq!(ret, TC_ACT_REDIRECT, "sent back into the pod");

    // The packet became an ICMP port unreachable from the VIP, quoting the SYN.
    let icmp = parse_checked(&out);
    assert_eq!(icmp.proto, 1);
    assert_eq!(*icmp.src.ip(), VIP);
    assert_eq!(*icmp.dst.ip(), CLIENT);
    assert_eq!((out[34], out[35]), (3, 3), "destination/port unreachable");
    assert_eq!(&out[42..62], &syn[14..34], "quotes the original IP header");
    assert_eq!(&out[0..6], &syn[6..12], "addressed to the pod's MAC");

    let events = f.drain();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event_type, EventType::Drop);
    assert_eq!(
        events[0].drop_reason,
        Some(DropReason::ServiceBackendNotFound)
    );
    assert_eq!(events[0].dst, Some(IpAddr::V4(VIP)));
    let drops =
        f.dp.counters()
            .expect("counters")
            .into_iter()
            .find(|c| c.reason == 158 && c.direction == Some(Direction::Egress))
            .map_or(0, |c| c.packets);
    assert_eq!(drops, 1);
    assert!(
        f.dp.conntrack()
            .expect("ct")
            .get(&ct_key(CLIENT, VIP, 40000, 80, TCP))
            .expect("ct")
            .is_none(),
        "a refused connection leaves no conntrack entry"
    );
}

#[test]
fn with_the_switch_off_services_are_not_translated() {
    let mut f = Fixture::new(false);
    f.service(VIP, 80, TCP, &[BACKEND_A]);
    let syn = packet(CLIENT, VIP, TCP, 40000, 80, SYN);
    assert_eq!(f.run(PodProgram::FromPod, &syn), (TC_ACT_OK, syn.clone()));
}

#[test]
fn batched_writes_program_many_services_the_datapath_serves() {
    let mut f = Fixture::new(true);
    let n: u32 = 20_000;
    let frontend = |i: u32| LbFrontend {
        addr: SocketAddrV4::new(Ipv4Addr::from(u32::from(VIP) + i), 80),
        proto: TCP,
    };
    f.lb.write_backends(&[
        (1, SocketAddrV4::new(BACKEND_A, 8080)),
        (2, SocketAddrV4::new(BACKEND_B, 8080)),
    ])
    .expect("backends");
    let slots: Vec<(u32, u32, u32)> = (1..=n).map(|id| (id, 0, 1 + id % 2)).collect();
    f.lb.write_slots(&slots).expect("slots");
    let services: Vec<(LbFrontend, u32, u32)> = (1..=n).map(|id| (frontend(id), id, 1)).collect();
    f.lb.write_services(&services).expect("services");
    assert_eq!(f.lb.services().expect("read back").len(), n as usize);

    // The last one and one in the middle are served, each by its own backend.
    for id in [n, n / 2 + 1] {
        let out = f.run(
            PodProgram::FromPod,
            &packet(CLIENT, *frontend(id).addr.ip(), TCP, 40000, 80, SYN),
        );
        let want = if id % 2 == 0 { BACKEND_A } else { BACKEND_B };
        assert_eq!(
            parse_checked(&out.1).dst,
            SocketAddrV4::new(want, 8080),
            "service {id}"
        );
    }

    // Batched removal is idempotent: a key already gone is skipped.
    let gone: Vec<LbFrontend> = (1..=n).map(frontend).collect();
    f.lb.remove_services(&gone[..10]).expect("remove 10");
    f.lb.remove_services(&gone)
        .expect("remove all, 10 already gone");
    assert!(f.lb.services().expect("read back").is_empty());
}

#[test]
fn a_full_service_map_stops_the_batch_at_the_element_that_did_not_fit() {
    let mut f = Fixture::new(true);
    let capacity = f.lb.capacity().services;
    let items: Vec<(LbFrontend, u32, u32)> = (0..=capacity)
        .map(|i| {
            let fe = LbFrontend {
                addr: SocketAddrV4::new(Ipv4Addr::from(0x0a60_0000 + i), 80),
                proto: TCP,
            };
            (fe, i + 1, 1)
        })
        .collect();
    let err =
        f.lb.write_services(&items)
            .expect_err("one more than max_entries");
    assert!(err.is_map_full(), "{err}");
    let porin_core::datapath::DatapathError::MapBatch { map, done, .. } = &err else {
        panic!("want MapBatch, got {err}");
    };
    assert_eq!((*map, *done), ("porin_lb_svc", capacity as usize));
    let message = err.to_string();
    assert!(
        message.contains("porin_lb_svc") && message.contains("is full"),
        "{message}"
    );
}

/// The affinity entry of `client` for service 7 (per-packet LB: keyed by the IPv4 address).
fn affinity_of(f: &Fixture, client: Ipv4Addr) -> Option<LbAffinityValue> {
    let key = LbAffinityKey {
        client: u64::from(u32::from_ne_bytes(client.octets())),
        service_id: 7,
        netns_cookie: 0,
        pad: [0; 3],
    };
    f.lb.affinity()
        .expect("affinity map")
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

#[test]
fn client_ip_affinity_keeps_a_client_on_its_backend_until_the_timeout() {
    let mut f = Fixture::new(true);
    f.service(VIP, 80, TCP, &[BACKEND_A, BACKEND_B]);
    let syn = |client: Ipv4Addr, sport: u16| packet(client, VIP, TCP, sport, 80, SYN);
    // Without affinity nothing is recorded.
    f.run(PodProgram::FromPod, &syn(CLIENT, 49000));
    assert!(f.lb.affinity().expect("affinity map").is_empty());

    let timeout = 60;
    let fe = LbFrontend {
        addr: SocketAddrV4::new(VIP, 80),
        proto: TCP,
    };
    let value = LbSvcValue {
        service_id: 7,
        backend_count: 2,
        flags: LB_F_AFFINITY | (timeout << LB_AFFINITY_TIMEOUT_SHIFT),
    };
    f.lb.write_service_values(&[(fe, value)])
        .expect("affinity on");

    // Every new connection of one client (new source ports) reaches the same backend.
    let first = parse_checked(&f.run(PodProgram::FromPod, &syn(CLIENT, 50000)).1).dst;
    for sport in 50001..50033 {
        let dst = parse_checked(&f.run(PodProgram::FromPod, &syn(CLIENT, sport)).1).dst;
        assert_eq!(dst, first, "connection from port {sport}");
    }
    let entry = affinity_of(&f, CLIENT).expect("an entry keyed by the client's address");
    let first_id = if *first.ip() == BACKEND_A { 1 } else { 2 };
    assert_eq!(entry.backend_id, first_id);

    // Different clients are bound independently: together they reach both backends.
    let mut seen = BTreeSet::new();
    for i in 0..48u8 {
        let client = Ipv4Addr::new(10, 0, 9, i + 1);
        let a = parse_checked(&f.run(PodProgram::FromPod, &syn(client, 51000)).1).dst;
        let b = parse_checked(&f.run(PodProgram::FromPod, &syn(client, 51001)).1).dst;
        assert_eq!(a, b, "client {client}");
        seen.insert(*a.ip());
    }
    assert_eq!(seen, BTreeSet::from([BACKEND_A, BACKEND_B]));

    // A recorded binding is honoured (backend 3 is no slot of the service: only affinity
    // can send a client there)...
    f.lb.upsert_backend(3, SocketAddrV4::new(BACKEND_C, 8080))
        .expect("backend");
    let key = LbAffinityKey {
        client: u64::from(u32::from_ne_bytes(CLIENT.octets())),
        service_id: 7,
        netns_cookie: 0,
        pad: [0; 3],
    };
    let now = entry.last_used_ns;
    f.lb.set_affinity(
        key,
        LbAffinityValue {
            last_used_ns: now,
            backend_id: 3,
            pad: 0,
        },
    )
    .expect("affinity entry");
    let dst = parse_checked(&f.run(PodProgram::FromPod, &syn(CLIENT, 52000)).1).dst;
    assert_eq!(dst, SocketAddrV4::new(BACKEND_C, 8080));

    // ...until it is older than the timeout: then the client chooses again among the slots.
    let expired = now.saturating_sub(u64::from(timeout + 1) * 1_000_000_000);
    f.lb.set_affinity(
        key,
        LbAffinityValue {
            last_used_ns: expired,
            backend_id: 3,
            pad: 0,
        },
    )
    .expect("affinity entry");
    let dst = parse_checked(&f.run(PodProgram::FromPod, &syn(CLIENT, 52001)).1).dst;
    assert!(
        [BACKEND_A, BACKEND_B].contains(dst.ip()),
        "an expired binding was used: {dst}"
    );
    let refreshed = affinity_of(&f, CLIENT).expect("entry");
    assert!(refreshed.last_used_ns >= now && refreshed.backend_id != 3);

    // A backend that is gone is not used even within the timeout.
    f.lb.set_affinity(
        key,
        LbAffinityValue {
            last_used_ns: refreshed.last_used_ns,
            backend_id: 42,
            pad: 0,
        },
    )
    .expect("affinity entry");
    let dst = parse_checked(&f.run(PodProgram::FromPod, &syn(CLIENT, 52002)).1).dst;
    assert!([BACKEND_A, BACKEND_B].contains(dst.ip()), "{dst}");
}
