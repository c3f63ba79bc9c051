//! Map sizes from `[plugins.lb]` against the real kernel: the maps are created with the
//! configured `max_entries`, a pinned map of another size is recreated at start, and a
//! full map is an error naming the map and the service that did not fit while the
//! services that fit are served.
//!
//! Needs root (CAP_BPF) and bpffs; fails with a clear message otherwise.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use common::TestDatapath;
use porin_core::datapath::{LbFrontend, MAP_LB_MAGLEV, resize_pinned_maps};
use porin_lb::LbConfig;
use porin_lb::datapath_maps::DatapathMaps;
use porin_lb::desired::{DesiredServices, FrontendSpec};
use porin_lb::programmer::Programmer;

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
            ("porin_lb_svc".to_string(), 8, 16)
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
