//! The IPv6 programmer (`programmer6.rs`) against the real pinned maps: frontends grow,
//! shrink and go with their slots and backends, a backend shared by two frontends stays
//! until neither uses it, and a programmer adopting the maps (a restarted agent) keeps
//! the ids and writes nothing for an unchanged state. Each state is also checked through
//! the datapath: `bpf/pod.c` (BPF_PROG_TEST_RUN) sends a packet to the VIP to a backend
//! of the frontend. Frontends with `sessionAffinity: ClientIP` carry their timeout, and
//! the clients bound to a backend that leaves (or to a frontend that goes) are unbound.
//!
//! Needs root (CAP_BPF + CAP_NET_ADMIN) and bpffs; fails with a clear message otherwise.

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::atomic::{AtomicU16, Ordering};

use common::TestDatapath;
use common::packet6;
use porin_core::datapath::abi::{
    LB_AFFINITY_TIMEOUT_SHIFT, LB_F_AFFINITY, LB6_SERVICE_ID_BASE, LbAffinity6Key, LbAffinityValue,
};
use porin_core::datapath::{Lb6Frontend, Lb6Maps, PodProgram, test_run};
use porin_lb::desired6::DesiredServices6;
use porin_lb::programmer6::{Affinity6, Programmer6};

const TCP: u8 = 6;
const SYN: u8 = 0x02;
const CLIENT: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 1, 0, 0, 0, 0, 5);

fn fe(last: u16) -> Lb6Frontend {
    Lb6Frontend {
        addr: SocketAddrV6::new(Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, last), 80, 0, 0),
        proto: TCP,
    }
}

fn be(last: u16) -> SocketAddrV6 {
    SocketAddrV6::new(Ipv6Addr::new(0xfd00, 0x10, 2, 0, 0, 0, 0, last), 8080, 0, 0)
}

static NEXT_PORT: AtomicU16 = AtomicU16::new(20000);

/// The backends the datapath sends new connections to `frontend` to (40 tries, each from
/// a source port never used before, so no earlier translation is reused).
fn served(dp: &TestDatapath, frontend: Lb6Frontend) -> BTreeSet<SocketAddrV6> {
    let fd = dp.dp.program_fd(PodProgram::FromPod).expect("program fd");
    (0..40)
        .map(|_| {
            let sport = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
            let syn = packet6::packet6(CLIENT, *frontend.addr.ip(), TCP, sport, 80, SYN);
            let out = test_run(fd, &syn).expect("BPF_PROG_TEST_RUN");
            packet6::parse_checked6(&out.packet).1
        })
        .collect()
}

#[test]
fn ipv6_frontends_grow_shrink_go_and_are_adopted() {
    let dp = TestDatapath::load("programmer6", &[("CFG_ENABLE_LB", 1)]);
    let mut maps = Lb6Maps::open(|name| dp.dp.map_pin_path(name)).expect("opening the maps");
    let mut programmer = Programmer6::default();

    // Two frontends sharing backend 2.
    let mut desired = DesiredServices6::new();
    desired.insert(fe(1), vec![be(1), be(2)]);
    desired.insert(fe(2), vec![be(2)]);
    assert!(programmer.sync(&desired, &mut maps).is_empty());
    assert_eq!(served(&dp, fe(1)), BTreeSet::from([be(1), be(2)]));
    assert_eq!(served(&dp, fe(2)), BTreeSet::from([be(2)]));
    assert_eq!(maps.backends().len(), 2);

    // fe(1) shrinks to backend 1: its second slot goes, backend 2 stays for fe(2).
    desired.insert(fe(1), vec![be(1)]);
    assert!(programmer.sync(&desired, &mut maps).is_empty());
    assert_eq!(served(&dp, fe(1)), BTreeSet::from([be(1)]));
    assert_eq!(served(&dp, fe(2)), BTreeSet::from([be(2)]));
    assert_eq!(maps.slots().len(), 2, "one slot per frontend");
    assert_eq!(maps.backends().len(), 2);

    // fe(2) goes: its slot and, unused now, backend 2 go with it.
    desired.remove(&fe(2));
    assert!(programmer.sync(&desired, &mut maps).is_empty());
    assert_eq!(maps.services().len(), 1);
    assert_eq!(maps.slots().len(), 1);
    assert_eq!(
        maps.backends()
            .into_iter()
            .map(|(_, a)| a)
            .collect::<Vec<_>>(),
        vec![be(1)]
    );

    // A restarted agent adopts the maps: same ids, nothing rewritten, and it goes on.
    let ids_before = (maps.services(), maps.slots(), maps.backends());
    let mut adopted = Programmer6::adopt(&mut maps);
    assert_eq!(adopted.service_count(), 1);
    assert!(adopted.sync(&desired, &mut maps).is_empty());
    assert_eq!((maps.services(), maps.slots(), maps.backends()), ids_before);
    desired.insert(fe(1), vec![be(1), be(3)]);
    assert!(adopted.sync(&desired, &mut maps).is_empty());
    assert_eq!(served(&dp, fe(1)), BTreeSet::from([be(1), be(3)]));
}

#[test]
fn affinity_frontends_carry_their_timeout_and_lose_the_clients_of_a_leaving_backend() {
    let dp = TestDatapath::load("programmer6-affinity", &[("CFG_ENABLE_LB", 1)]);
    let mut maps = Lb6Maps::open(|name| dp.dp.map_pin_path(name)).expect("opening the maps");
    let mut programmer = Programmer6::default();
    let mut desired = DesiredServices6::new();
    desired.insert(fe(1), vec![be(1), be(2)]);
    let affinity = Affinity6::from([(fe(1), 60)]);
    assert!(
        programmer
            .sync_semantics(&desired, &affinity, &mut maps, None)
            .is_empty()
    );
    let (_, service_id, _) = maps.services()[0];
    assert!(
        service_id >= LB6_SERVICE_ID_BASE,
        "IPv6 id range: {service_id:#x}"
    );
    assert_eq!(
        maps.service_flags(),
        vec![(fe(1), LB_F_AFFINITY | (60 << LB_AFFINITY_TIMEOUT_SHIFT))]
    );

    // Two clients bound to the two backends (as the datapath records them).
    let id_of = |maps: &Lb6Maps, addr: SocketAddrV6| {
        maps.backends()
            .into_iter()
            .find(|(_, a)| *a == addr)
            .map(|(id, _)| id)
            .expect("backend id")
    };
    let bind = |maps: &mut Lb6Maps, client: u16, backend_id: u32| {
        let key = LbAffinity6Key {
            client: Ipv6Addr::new(0xfd00, 0x10, 9, 0, 0, 0, 0, client).octets(),
            service_id,
            netns_cookie: 0,
            pad: [0; 3],
        };
        let value = LbAffinityValue {
            last_used_ns: 1,
            backend_id,
            pad: 0,
        };
        maps.affinity.set(key, value).expect("affinity entry");
    };
    let (id1, id2) = (id_of(&maps, be(1)), id_of(&maps, be(2)));
    bind(&mut maps, 1, id1);
    bind(&mut maps, 2, id2);

    // be(2) leaves: its client is unbound, the other keeps its backend.
    desired.insert(fe(1), vec![be(1)]);
    assert!(
        programmer
            .sync_semantics(&desired, &affinity, &mut maps, None)
            .is_empty()
    );
    let left: Vec<u32> = maps
        .affinity
        .entries()
        .expect("affinity")
        .into_iter()
        .map(|(_, v)| v.backend_id)
        .collect();
    assert_eq!(left, vec![id1]);
    assert_eq!(served(&dp, fe(1)), BTreeSet::from([be(1)]));

    // Affinity off: the flags go; the frontend going drops every client of its id.
    assert!(programmer.sync(&desired, &mut maps).is_empty());
    assert_eq!(maps.service_flags(), vec![(fe(1), 0)]);
    assert!(
        programmer
            .sync_semantics(&desired, &affinity, &mut maps, None)
            .is_empty()
    );
    assert!(
        programmer
            .sync(&DesiredServices6::new(), &mut maps)
            .is_empty()
    );
    assert!(maps.affinity.entries().expect("affinity").is_empty());
}

#[test]
fn a_frontend_with_an_id_from_before_the_ipv6_range_is_reprogrammed_in_it() {
    let dp = TestDatapath::load("programmer6-oldid", &[("CFG_ENABLE_LB", 1)]);
    let mut maps = Lb6Maps::open(|name| dp.dp.map_pin_path(name)).expect("opening the maps");
    // What an agent from before the IPv6 id range left: service id 7.
    maps.write_backend(1, be(1)).expect("backend");
    maps.write_slot(7, 0, 1).expect("slot");
    maps.write_service(fe(1), 7, 1).expect("service");

    let mut adopted = Programmer6::adopt(&mut maps);
    assert_eq!(adopted.service_count(), 0, "not adopted");
    assert!(maps.services().is_empty() && maps.slots().is_empty());
    let mut desired = DesiredServices6::new();
    desired.insert(fe(1), vec![be(1)]);
    assert!(adopted.sync(&desired, &mut maps).is_empty());
    let (_, service_id, _) = maps.services()[0];
    assert!(service_id >= LB6_SERVICE_ID_BASE, "{service_id:#x}");
    assert_eq!(served(&dp, fe(1)), BTreeSet::from([be(1)]));
}
