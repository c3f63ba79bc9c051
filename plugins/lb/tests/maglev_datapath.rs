//! The Maglev property end to end through the real datapath: the lb plugin's programmer
//! writes the tables into the pinned maps, `bpf/pod.c` picks backends for many
//! connections (BPF_PROG_TEST_RUN), and a backend change moves only the connections it
//! must: removing one of N backends moves only the flows that were on it, adding one
//! moves about 1/(N+1) of them.
//!
//! Needs root (CAP_BPF + CAP_NET_ADMIN) and bpffs; fails with a clear message otherwise.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use aya::maps::{HashMap, MapData};
use common::TestDatapath;
use common::packet;
use porin_core::datapath::abi::{CtKey, LbNatEntry};
use porin_core::datapath::{LbFrontend, MAP_LB_NAT, PodProgram, test_run};
use porin_lb::datapath_maps::DatapathMaps;
use porin_lb::desired::{DesiredServices, FrontendSpec};
use porin_lb::programmer::Programmer;

const TC_ACT_OK: u32 = 0;
const UDP: u8 = 17;
const TCP: u8 = 6;
const SYN: u8 = 0x02;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 7);
const M: u32 = 16381;
const FLOWS: u16 = 3000;

struct Fixture {
    dp: TestDatapath,
    maps: DatapathMaps,
    programmer: Programmer,
}

impl Fixture {
    fn new() -> Self {
        let dp = TestDatapath::load(
            "maglev",
            &[
                ("CFG_ENABLE_LB", 1),
                ("CFG_LB_MAGLEV", 1),
                ("CFG_LB_MAGLEV_M", M),
            ],
        );
        let maps =
            DatapathMaps::open(|name| dp.dp.map_pin_path(name), M).expect("opening the maps");
        Self {
            dp,
            maps,
            programmer: Programmer::default().with_maglev(Some(M)),
        }
    }

    /// Programs the service with these backends (10.1.0.<i>:8080).
    fn program(&mut self, proto: u8, backends: &[u8]) {
        let spec = FrontendSpec {
            backends: backends
                .iter()
                .map(|i| SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, *i), 8080))
                .collect(),
            ..FrontendSpec::default()
        };
        let fe = LbFrontend {
            addr: SocketAddrV4::new(VIP, 80),
            proto,
        };
        let desired: DesiredServices = [(fe, spec)].into_iter().collect();
        let report = self.programmer.sync(&desired, &mut self.maps);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        // Established connections keep their backend through porin_lb_nat; the property
        // is about where new connections of the same tuples go.
        let path = self.dp.dp.map_pin_path(MAP_LB_NAT);
        let mut nat: HashMap<MapData, CtKey, LbNatEntry> = HashMap::try_from(
            aya::maps::Map::HashMap(MapData::from_pin(&path).expect("porin_lb_nat pin")),
        )
        .expect("porin_lb_nat");
        let keys: Vec<CtKey> = nat.keys().filter_map(Result::ok).collect();
        for key in keys {
            let _ = nat.remove(&key);
        }
    }

    /// Where each of the flows goes: flow index -> last octet of its backend.
    fn picks(&self, proto: u8) -> Vec<u8> {
        let fd = self
            .dp
            .dp
            .program_fd(PodProgram::FromPod)
            .expect("program fd");
        (0..FLOWS)
            .map(|i| {
                let client = Ipv4Addr::new(10, 0, (i % 50) as u8, 1 + (i / 50) as u8);
                let sport = 30000 + i * 7;
                let out = test_run(fd, &packet::packet(client, VIP, proto, sport, 80, SYN))
                    .expect("test run");
                assert_eq!(out.retval, TC_ACT_OK);
                packet::parse_checked(&out.packet).dst.ip().octets()[3]
            })
            .collect()
    }
}

fn spread(picks: &[u8]) -> BTreeMap<u8, usize> {
    let mut counts = BTreeMap::new();
    for b in picks {
        *counts.entry(*b).or_default() += 1;
    }
    counts
}

#[test]
fn a_backend_change_moves_only_the_flows_it_must() {
    for proto in [TCP, UDP] {
        let mut f = Fixture::new();
        f.program(proto, &[1, 2, 3, 4, 5]);
        let before = f.picks(proto);
        let counts = spread(&before);
        assert_eq!(counts.len(), 5, "every backend serves: {counts:?}");
        let fair = f64::from(FLOWS) / 5.0;
        assert!(
            counts
                .values()
                .all(|c| (*c as f64 - fair).abs() < fair * 0.25),
            "balanced within 25%: {counts:?}"
        );
        // Deterministic: the same tuples land on the same backends again.
        assert_eq!(f.picks(proto), before);

        // Backend 3 goes: its flows move, the others (almost all) stay.
        f.program(proto, &[1, 2, 4, 5]);
        let after = f.picks(proto);
        let on_removed = before.iter().filter(|b| **b == 3).count();
        let moved_others = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| **b != 3 && b != a)
            .count();
        assert!(
            after.iter().all(|b| *b != 3),
            "no flow stays on a removed backend"
        );
        assert!(
            (moved_others as f64) < f64::from(FLOWS) * 0.02,
            "proto {proto}: {moved_others} of {} flows on surviving backends moved",
            usize::from(FLOWS) - on_removed
        );

        // Backend 6 comes: about 1/5 of the flows move to it, the rest stay.
        f.program(proto, &[1, 2, 4, 5, 6]);
        let grown = f.picks(proto);
        let moved = after.iter().zip(&grown).filter(|(a, g)| a != g).count();
        let to_new = grown.iter().filter(|b| **b == 6).count();
        let fraction = moved as f64 / f64::from(FLOWS);
        assert!(
            (0.14..=0.26).contains(&fraction),
            "proto {proto}: {moved} flows moved ({fraction:.3}), expected about 1/5"
        );
        assert!(
            moved - to_new < usize::from(FLOWS) / 50,
            "proto {proto}: flows moved between old backends: {} (of {moved})",
            moved - to_new
        );
        println!(
            "proto {proto}: removal moved {moved_others} other flows; addition moved {moved} ({fraction:.3})"
        );
    }
}
