//! BPF_PROG_TEST_RUN tests of Maglev backend selection in `bpf/pod.c` (`CFG_LB_MAGLEV`):
//! a new connection goes to the backend at its 5-tuple's slot of the service's table
//! (`porin_lb_maglev`), tables of the configured size M load and verify, a pinned map of
//! another M is recreated, and a service without a table falls back to a random slot.
//!
//! Needs root (CAP_BPF + CAP_NET_ADMIN) and bpffs; fails with a clear message otherwise.

mod common;

use common::lb_hash::tuple_hash;
use common::packet::{packet, parse_checked};
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use porin_core::datapath::{
    Datapath, DatapathConfig, LbFrontend, LbMaps, MAP_LB_MAGLEV, MaglevMaps, PodProgram,
    ensure_maglev_map, remove_node_pins, test_run,
};

const TC_ACT_OK: u32 = 0;
const TCP: u8 = 6;
const UDP: u8 = 17;
const SYN: u8 = 0x02;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 60);
const SERVICE_ID: u32 = 7;

static NEXT: AtomicU32 = AtomicU32::new(0);

struct Fixture {
    dp: Datapath,
    lb: LbMaps,
    maglev: MaglevMaps,
    pin_root: PathBuf,
}

impl Fixture {
    fn new(m: u32) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "Maglev BPF_PROG_TEST_RUN tests must run as root (they load eBPF programs)"
        );
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pin_root = PathBuf::from(format!(
            "/sys/fs/bpf/porin-maglevtest-{}-{n}",
            std::process::id()
        ));
        Self::load(pin_root, m)
    }

    fn load(pin_root: PathBuf, m: u32) -> Self {
        let config = DatapathConfig {
            node_name: "node-1".into(),
            pin_root: pin_root.clone(),
            switches: vec![
                ("CFG_ENABLE_LB".into(), 1),
                ("CFG_LB_MAGLEV".into(), 1),
                ("CFG_LB_MAGLEV_M".into(), m),
            ],
        };
        let dp = Datapath::load(&config)
            .unwrap_or_else(|e| panic!("loading the datapath with M = {m}: {e}"));
        let lb = LbMaps::open(|name| dp.map_pin_path(name)).expect("opening the lb maps");
        let maglev =
            MaglevMaps::open(&dp.map_pin_path(MAP_LB_MAGLEV), m).expect("opening the maglev map");
        Self {
            dp,
            lb,
            maglev,
            pin_root,
        }
    }

    /// Backends 1..=n at 10.0.<i>.9:8080 in slots 0..n of the service.
    fn service(&mut self, proto: u8, n: u32) -> Vec<Ipv4Addr> {
        let addrs: Vec<Ipv4Addr> = (1..=n).map(|i| Ipv4Addr::new(10, 0, i as u8, 9)).collect();
        for (i, addr) in addrs.iter().enumerate() {
            let id = i as u32 + 1;
            self.lb
                .upsert_backend(id, SocketAddrV4::new(*addr, 8080))
                .expect("backend");
            self.lb.set_slot(SERVICE_ID, i as u32, id).expect("slot");
        }
        let fe = LbFrontend {
            addr: SocketAddrV4::new(VIP, 80),
            proto,
        };
        self.lb.upsert_service(fe, SERVICE_ID, n).expect("service");
        addrs
    }

    /// The backend a new connection from `client:sport` is sent to.
    fn pick(&self, client: Ipv4Addr, sport: u16, proto: u8) -> Ipv4Addr {
        let fd = self.dp.program_fd(PodProgram::FromPod).expect("program fd");
        let out = test_run(fd, &packet(client, VIP, proto, sport, 80, SYN)).expect("test run");
        assert_eq!(out.retval, TC_ACT_OK, "from-pod verdict");
        *parse_checked(&out.packet).dst.ip()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = remove_node_pins(&self.pin_root, "node-1");
        let _ = std::fs::remove_dir_all(&self.pin_root);
    }
}

/// Each client tuple seen once: (client, source port).
fn tuples(count: u16) -> Vec<(Ipv4Addr, u16)> {
    (0..count)
        .map(|i| {
            (
                Ipv4Addr::new(10, 0, 100 + (i % 7) as u8, 1 + (i % 200) as u8),
                20000 + i,
            )
        })
        .collect()
}

#[test]
fn new_connections_follow_the_table() {
    for (proto, m) in [(TCP, 251), (UDP, 16381)] {
        let mut f = Fixture::new(m);
        let backends = f.service(proto, 3);
        // A deliberately lopsided table: backend 1 owns slots divisible by 5, backend 2
        // the odd ones, backend 3 the rest; a random pick could not match it.
        let table: Vec<u32> = (0..m)
            .map(|s| {
                if s % 5 == 0 {
                    1
                } else if s % 2 == 1 {
                    2
                } else {
                    3
                }
            })
            .collect();
        f.maglev.set(SERVICE_ID, &table).expect("table");
        assert_eq!(
            f.maglev.table(SERVICE_ID).expect("read"),
            Some(table.clone())
        );

        let mut per_backend: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
        for (client, sport) in tuples(400) {
            let got = f.pick(client, sport, proto);
            let slot = tuple_hash(client, VIP, sport, 80, proto) % m;
            let want = backends[table[slot as usize] as usize - 1];
            assert_eq!(
                got, want,
                "M={m} proto {proto}: {client}:{sport} hashes to slot {slot}"
            );
            *per_backend.entry(got).or_default() += 1;
        }
        assert_eq!(per_backend.len(), 3, "{per_backend:?}");

        // A replaced table takes effect for new connections at once.
        f.maglev
            .set(SERVICE_ID, &vec![2; m as usize])
            .expect("table");
        for (client, sport) in tuples(50).into_iter().map(|(c, p)| (c, p + 10000)) {
            assert_eq!(f.pick(client, sport, proto), backends[1]);
        }
    }
}

#[test]
fn a_service_without_a_table_falls_back_to_random_slots() {
    let mut f = Fixture::new(251);
    let backends = f.service(TCP, 2);
    let mut seen: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    for (client, sport) in tuples(200) {
        *seen.entry(f.pick(client, sport, TCP)).or_default() += 1;
    }
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        backends,
        "both backends serve: {seen:?}"
    );
    // Removing a table that is not there is fine; listing shows none.
    f.maglev.remove(SERVICE_ID).expect("remove");
    assert!(f.maglev.service_ids().expect("ids").is_empty());
}

#[test]
fn a_pinned_map_of_another_size_is_recreated() {
    let mut f = Fixture::new(251);
    f.service(TCP, 2);
    f.maglev.set(SERVICE_ID, &[1; 251]).expect("table");
    let maps_dir = f.dp.map_pin_path(MAP_LB_MAGLEV);
    let maps_dir = maps_dir.parent().expect("maps dir").to_path_buf();
    // Same size: kept, with its table.
    assert!(!ensure_maglev_map(&maps_dir, 251, 262_144).expect("same size"));
    assert_eq!(f.maglev.service_ids().expect("ids"), vec![SERVICE_ID]);

    // Another size (the configuration changed): a new, empty map the programs verify
    // against; the old handle still sees the old map.
    let pin_root = f.pin_root.clone();
    let g = Fixture::load(pin_root, 509);
    assert!(
        g.maglev.service_ids().expect("ids").is_empty(),
        "the recreated map starts empty"
    );
    assert_eq!(f.maglev.service_ids().expect("ids"), vec![SERVICE_ID]);
    let wrong = MaglevMaps::open(&g.dp.map_pin_path(MAP_LB_MAGLEV), 509)
        .expect("open")
        .set(SERVICE_ID, &[1; 251]);
    assert!(wrong.is_err(), "a table of the wrong size is refused");
    std::mem::forget(g); // `f` removes the shared pins
}
