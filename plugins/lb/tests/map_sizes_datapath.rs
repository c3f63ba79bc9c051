//! Map sizes from `[plugins.lb]` against the real kernel: the maps are created with the
//! configured `max_entries`, a pinned map of another size is recreated at start, and a
//! full map is an error naming the map and the service that did not fit while the
//! services that fit are served. The IPv6 maps take the same sizes (`porin_lb_svc6`...).
//!
//! Needs root (CAP_BPF) and bpffs; fails with a clear message otherwise.

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use common::TestDatapath;
use porin_core::datapath::{Lb6Frontend, Lb6Maps, LbFrontend, MAP_LB_MAGLEV, resize_pinned_maps};
use porin_lb::LbConfig;
use porin_lb::datapath_maps::DatapathMaps;
use porin_lb::desired::{DesiredServices, FrontendSpec};
use porin_lb::desired6::DesiredServices6;
use porin_lb::programmer::Programmer;
use porin_lb::programmer6::Programmer6;

const M: u32 = 251;

fn frontend(i: u8) -> LbFrontend {
    LbFrontend {
        addr: SocketAddrV4::new(Ipv4Addr::new(10, 96, 1, i), 80),
        proto: 6,
    }
}

/// `count` services of two backends each.
fn services(count: u8) -> DesiredServices {
    (1..=count)
        .map(|i| {
            let spec = FrontendSpec {
                backends: vec![
                    SocketAddrV4::new(Ipv4Addr::new(10, 2, i, 1), 8080),
                    SocketAddrV4::new(Ipv4Addr::new(10, 2, i, 2), 8080),
                ],
                ..FrontendSpec::default()
            };
            (frontend(i), spec)
        })
        .collect()
}

/// The switches the lb plugin contributes for `config` (its map sizes) plus `extra`.
fn switches(config: &LbConfig, extra: &[(&'static str, u32)]) -> Vec<(&'static str, u32)> {
    let mut out: Vec<(&'static str, u32)> = extra.to_vec();
    for (_, value, names) in config.map_sizes() {
        out.extend(names.iter().map(|name| (*name, value)));
    }
    out
}

fn owned(switches: &[(&str, u32)]) -> Vec<(String, u32)> {
    switches
        .iter()
        .map(|(name, value)| ((*name).to_string(), *value))
        .collect()
}

#[test]
fn a_full_service_map_names_the_service_and_keeps_the_others() {
    let config = LbConfig {
        map_max_services: 3,
        ..LbConfig::default()
    };
    let dp = TestDatapath::load("svcfull", &switches(&config, &[("CFG_ENABLE_LB", 1)]));
    let mut maps = DatapathMaps::open(|name| dp.dp.map_pin_path(name), 16381).expect("maps");
    assert_eq!(maps.lb.capacity().services, 3, "the configured size");
    let mut programmer = Programmer::default();
    let report = programmer.sync(&services(5), &mut maps);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    let error = &report.errors[0];
    assert!(
        error.contains("service 10.96.1.4:80/TCP did not fit (and 1 more services)")
            && error.contains("map porin_lb_svc (max_entries 3) is full"),
        "{error}"
    );
    assert_eq!(
        report.failed.keys().copied().collect::<Vec<_>>(),
        vec![frontend(4), frontend(5)]
    );
    let served: Vec<LbFrontend> = maps
        .lb
        .services()
        .expect("services")
        .into_iter()
        .map(|(fe, _, count)| {
            assert_eq!(count, 2);
            fe
        })
        .collect();
    assert_eq!(
        served.len(),
        3,
        "the services that fit are served: {served:?}"
    );
}

/// IPv6 frontend `i` ([fd00:96::1:i]:80/TCP).
fn frontend6(i: u16) -> Lb6Frontend {
    let vip = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 1, i);
    Lb6Frontend {
        addr: SocketAddrV6::new(vip, 80, 0, 0),
        proto: 6,
    }
}

#[test]
fn ipv6_maps_take_the_configured_sizes_and_a_full_one_names_the_service() {
    let config = LbConfig {
        map_max_services: 3,
        map_max_backends: 100,
        map_max_slots: 200,
        ..LbConfig::default()
    };
    let dp = TestDatapath::load("svc6full", &switches(&config, &[("CFG_ENABLE_LB", 1)]));
    let mut maps = Lb6Maps::open(|name| dp.dp.map_pin_path(name)).expect("maps");
    let capacity = maps.capacity();
    assert_eq!(
        (capacity.services, capacity.backends, capacity.slots),
        (3, 100, 200),
        "the configured sizes"
    );
    let desired: DesiredServices6 = (1..=4)
        .map(|i| {
            let backend =
                SocketAddrV6::new(Ipv6Addr::new(0xfd00, 0x10, 2, 0, 0, 0, 0, i), 8080, 0, 0);
            (frontend6(i), vec![backend])
        })
        .collect();
    let mut programmer = Programmer6::default();
    let failed = programmer.sync(&desired, &mut maps);
    assert_eq!(failed.len(), 1, "{failed:?}");
    let (fe, error) = &failed[0];
    assert_eq!(*fe, frontend6(4));
    assert!(
        error.contains("service [fd00:96::1:4]:80/TCP")
            && error.contains("map porin_lb_svc6 (max_entries 3) is full"),
        "{error}"
    );
    assert_eq!(
        maps.services().len(),
        3,
        "the frontends that fit are served"
    );
    assert_eq!(
        programmer.entry_counts().0,
        3,
        "map pressure counts what is in the map"
    );

    // Room again (a frontend went): the one that did not fit is programmed.
    let mut fewer = desired.clone();
    fewer.remove(&frontend6(1));
    assert!(programmer.sync(&fewer, &mut maps).is_empty());
    let served: BTreeSet<Lb6Frontend> = maps.services().into_iter().map(|(fe, _, _)| fe).collect();
    assert!(served.contains(&frontend6(4)), "{served:?}");
}

#[test]
fn a_full_maglev_map_names_the_service_and_keeps_the_others() {
    let config = LbConfig {
        map_max_maglev: 2,
        ..LbConfig::default()
    };
    let dp = TestDatapath::load(
        "maglevfull",
        &switches(
            &config,
            &[
                ("CFG_ENABLE_LB", 1),
                ("CFG_LB_MAGLEV", 1),
                ("CFG_LB_MAGLEV_M", M),
            ],
        ),
    );
    let mut maps = DatapathMaps::open(|name| dp.dp.map_pin_path(name), M).expect("maps");
    assert_eq!(maps.maglev.capacity(), 2);
    let mut programmer = Programmer::default().with_maglev(Some(M));
    let report = programmer.sync(&services(3), &mut maps);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(
        report.errors[0].contains("service 10.96.1.3:80/TCP: writing its Maglev table")
            && report.errors[0].contains("map porin_lb_maglev (max_entries 2) is full"),
        "{:?}",
        report.errors
    );
    assert_eq!(maps.maglev.service_ids().expect("ids").len(), 2);
    assert_eq!(maps.lb.services().expect("services").len(), 2);

    // Room again (a service went): the one that did not fit is programmed.
    let mut fewer = services(3);
    fewer.remove(&frontend(1));
    let report = programmer.sync(&fewer, &mut maps);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(maps.lb.services().expect("services").len(), 2);
    assert_eq!(maps.maglev.service_ids().expect("ids").len(), 2);
}

#[test]
fn a_pinned_map_of_another_size_is_recreated_at_start() {
    let small = LbConfig {
        map_max_services: 8,
        map_max_maglev: 4,
        ..LbConfig::default()
    };
    let lb_on = [("CFG_ENABLE_LB", 1), ("CFG_LB_MAGLEV_M", M)];
    let dp = TestDatapath::load("resize", &switches(&small, &lb_on));
    {
        let mut maps = DatapathMaps::open(|name| dp.dp.map_pin_path(name), M).expect("maps");
        let report = Programmer::default().sync(&services(2), &mut maps);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
    }

    // The same sizes: nothing recreated, the services are still there.
    let same = owned(&switches(&small, &lb_on));
    assert!(
        resize_pinned_maps(&dp.maps_dir(), &same)
            .expect("resize")
            .is_empty()
    );

    // Larger sizes: those two maps are recreated (empty), the others kept.
    let large = LbConfig {
        map_max_services: 16,
        map_max_maglev: 32,
        ..LbConfig::default()
    };
    let wanted = switches(&large, &lb_on);
    let resized = resize_pinned_maps(&dp.maps_dir(), &owned(&wanted)).expect("resize");
    let mut names: Vec<(String, u32, u32)> =
        resized.into_iter().map(|r| (r.map, r.from, r.to)).collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("porin_lb_maglev".to_string(), 4, 32),
            ("porin_lb_svc".to_string(), 8, 16),
            ("porin_lb_svc6".to_string(), 8, 16)
        ]
    );
    let reloaded = TestDatapath::reload(&dp.pin_root, &wanted);
    let maps = DatapathMaps::open(|name| reloaded.map_pin_path(name), M).expect("maps");
    assert_eq!(maps.lb.capacity().services, 16);
    assert_eq!(maps.maglev.capacity(), 32);
    assert!(
        maps.lb.services().expect("services").is_empty(),
        "a recreated map starts empty (the plugin reprograms it)"
    );
    assert_eq!(
        maps.lb.backends().expect("backends").len(),
        4,
        "maps whose size did not change keep their entries"
    );
    assert!(reloaded.map_pin_path(MAP_LB_MAGLEV).exists());
}
