//! Maglev for IPv6 frontends through the real datapath: the IPv6 programmer writes the
//! frontend's table into `porin_lb_maglev` (an id of the IPv6 range), `bpf/pod.c` picks
//! the backend at the slot of the connection's IPv6 5-tuple hash (mirrored here from
//! `lb6_tuple_hash`, `bpf/lib/lb6.h`), and removing one of N backends moves only the flows
//! that were on it.
//!
//! Needs root (CAP_BPF + CAP_NET_ADMIN) and bpffs; fails with a clear message otherwise.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddrV6};

use aya::maps::{HashMap, MapData};
use common::TestDatapath;
use common::{lb_hash, packet6};
use porin_core::datapath::abi::{CtKey, LB6_SERVICE_ID_BASE};
use porin_core::datapath::{Lb6Frontend, Lb6Maps, MAP_LB_MAGLEV, MaglevMaps, PodProgram, test_run};
use porin_lb::desired6::DesiredServices6;
use porin_lb::programmer6::{Affinity6, Programmer6};

const TC_ACT_OK: u32 = 0;
const TCP: u8 = 6;
const UDP: u8 = 17;
const SYN: u8 = 0x02;
const VIP: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x77);
const M: u32 = 16381;
const FLOWS: u16 = 2000;

fn client(i: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x10, 1, 0, 0, 0, i % 50, 1 + i / 50)
}

fn backend(i: u16) -> SocketAddrV6 {
    SocketAddrV6::new(Ipv6Addr::new(0xfd00, 0x10, 2, 0, 0, 0, 0, i), 8080, 0, 0)
}

struct Fixture {
    dp: TestDatapath,
    maps: Lb6Maps,
    maglev: MaglevMaps,
    programmer: Programmer6,
}

impl Fixture {
    fn new() -> Self {
        let dp = TestDatapath::load(
            "maglev6",
            &[
                ("CFG_ENABLE_LB", 1),
                ("CFG_LB_MAGLEV", 1),
                ("CFG_LB_MAGLEV_M", M),
            ],
        );
        let maps = Lb6Maps::open(|name| dp.dp.map_pin_path(name)).expect("opening the maps");
        let maglev =
            MaglevMaps::open(&dp.dp.map_pin_path(MAP_LB_MAGLEV), M).expect("the maglev map");
        Self {
            dp,
            maps,
            maglev,
            programmer: Programmer6::default().with_maglev(Some(M)),
        }
    }

    fn frontend(proto: u8) -> Lb6Frontend {
        Lb6Frontend {
            addr: SocketAddrV6::new(VIP, 80, 0, 0),
            proto,
        }
    }

    /// Programs the frontend with backends fd00:10:2::<i>:8080.
    fn program(&mut self, proto: u8, backends: &[u16]) {
        let mut desired = DesiredServices6::new();
        desired.insert(
            Self::frontend(proto),
            backends.iter().map(|i| backend(*i)).collect(),
        );
        let failed = self.programmer.sync_semantics(
            &desired,
            &Affinity6::new(),
            &mut self.maps,
            Some(&mut self.maglev),
        );
        assert!(failed.is_empty(), "{failed:?}");
        // Known connections keep their backend through porin_lb_nat6; the property is
        // about where new connections of the same tuples go.
        let path = self.dp.dp.map_pin_path("porin_lb_nat6");
        let mut nat: HashMap<MapData, CtKey, [u8; 24]> = HashMap::try_from(
            aya::maps::Map::LruHashMap(MapData::from_pin(&path).expect("porin_lb_nat6 pin")),
        )
        .expect("porin_lb_nat6");
        let keys: Vec<CtKey> = nat.keys().filter_map(Result::ok).collect();
        for key in keys {
            let _ = nat.remove(&key);
        }
    }

    /// Where each flow goes: flow index -> last group of its backend's address.
    fn picks(&self, proto: u8) -> Vec<u16> {
        let fd = self.dp.dp.program_fd(PodProgram::FromPod).expect("fd");
        (0..FLOWS)
            .map(|i| {
                let syn = packet6::packet6(client(i), VIP, proto, 30000 + i * 7, 80, SYN);
                let out = test_run(fd, &syn).expect("test run");
                assert_eq!(out.retval, TC_ACT_OK);
                packet6::parse_checked6(&out.packet).1.ip().segments()[7]
            })
            .collect()
    }
}

#[test]
fn ipv6_flows_follow_the_maglev_table_and_a_removed_backend_moves_only_its_own() {
    for proto in [TCP, UDP] {
        let mut f = Fixture::new();
        f.program(proto, &[1, 2, 3, 4, 5]);
        let ids: Vec<u32> = f.maglev.service_ids().expect("table ids");
        assert_eq!(ids.len(), 1, "one table: {ids:?}");
        let service_id = ids[0];
        assert!(
            service_id >= LB6_SERVICE_ID_BASE,
            "IPv6 id range: {service_id:#x}"
        );

        // Every flow lands on the backend at its hash's slot of the table.
        let table = f.maglev.table(service_id).expect("read").expect("a table");
        let by_id: BTreeMap<u32, u16> = f
            .maps
            .backends()
            .into_iter()
            .map(|(id, a)| (id, a.ip().segments()[7]))
            .collect();
        let before = f.picks(proto);
        for (i, got) in before.iter().enumerate() {
            let i = i as u16;
            let slot = lb_hash::tuple_hash6(client(i), VIP, 30000 + i * 7, 80, proto) % M;
            assert_eq!(
                Some(got),
                by_id.get(&table[slot as usize]),
                "proto {proto}: flow {i} hashes to slot {slot}"
            );
        }
        let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
        for b in &before {
            *counts.entry(*b).or_default() += 1;
        }
        assert_eq!(counts.len(), 5, "every backend serves: {counts:?}");

        // Backend 3 goes: its flows move, the others (almost all) stay.
        f.program(proto, &[1, 2, 4, 5]);
        let after = f.picks(proto);
        assert!(
            after.iter().all(|b| *b != 3),
            "no flow stays on the removed backend"
        );
        let moved_others = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| **b != 3 && b != a)
            .count();
        assert!(
            (moved_others as f64) < f64::from(FLOWS) * 0.02,
            "proto {proto}: {moved_others} flows on surviving backends moved"
        );

        // The frontend going takes its table with it.
        f.programmer.sync_semantics(
            &DesiredServices6::new(),
            &Affinity6::new(),
            &mut f.maps,
            Some(&mut f.maglev),
        );
        assert!(f.maglev.service_ids().expect("ids").is_empty());
    }
}
