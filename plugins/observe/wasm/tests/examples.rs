//! The example modules of `examples/wasm` (Rust and C), built for wasm32 by
//! the test, loaded by the real host and run over flows.

mod common;

use std::sync::Arc;

use common::{c_example, flow, rust_example};
use hubble_proto::flow::{self as pb, Verdict};
use porin_wasm::{Reason, WasmKind, WasmMetrics, WasmModuleConfig, WasmModules};

fn load(configs: Vec<WasmModuleConfig>) -> (WasmModules, Arc<WasmMetrics>) {
    let metrics = Arc::new(WasmMetrics::default());
    let modules = WasmModules::load(&configs, metrics.clone()).expect("engine");
    for s in modules.status() {
        assert_eq!(s.state, "running", "{s:?}");
    }
    (modules, metrics)
}

fn mixed_flows() -> Vec<pb::Flow> {
    vec![
        flow("shop", "db", 5432, Verdict::Forwarded),
        flow("shop", "db", 5432, Verdict::Dropped),
        flow("kube-system", "shop", 8080, Verdict::Forwarded),
        flow("tools", "shop", 80, Verdict::Forwarded),
    ]
}

#[test]
fn keep_drops_and_dns_errors_in_rust_and_c() {
    for path in [
        rust_example("keep-drops-dns-errors"),
        c_example("keep_drops_dns_errors"),
    ] {
        let (modules, _) = load(vec![WasmModuleConfig::new(
            "keep-drops",
            &path,
            WasmKind::Filter,
        )]);
        assert_eq!(
            modules.filter(&mixed_flows()),
            vec![false, true, false, false],
            "{}",
            path.display()
        );
    }
}

#[test]
fn drop_health_checks_by_port_and_node_identity() {
    let mut config = WasmModuleConfig::new(
        "health",
        rust_example("drop-health-checks"),
        WasmKind::Filter,
    );
    config.config = "8080".to_string();
    let (modules, _) = load(vec![config]);
    let mut flows = mixed_flows();
    let mut from_node = flow("", "shop", 80, Verdict::Forwarded);
    from_node.source.as_mut().expect("source").identity = 1;
    flows.push(from_node);
    assert_eq!(modules.filter(&flows), vec![true, true, false, true, false]);
}

#[test]
fn sample_keeps_one_forwarded_flow_in_n_and_every_drop() {
    let mut config = WasmModuleConfig::new("sample", rust_example("sample"), WasmKind::Filter);
    config.config = "3".to_string();
    let (modules, _) = load(vec![config]);
    let flows: Vec<_> = (0..9)
        .map(|_| flow("a", "b", 80, Verdict::Forwarded))
        .chain(std::iter::once(flow("a", "b", 80, Verdict::Dropped)))
        .collect();
    let keep = modules.filter(&flows);
    assert_eq!(keep.iter().filter(|k| **k).count(), 3 + 1, "{keep:?}");
    assert!(keep[9], "the drop is kept");
}

#[test]
fn a_refused_configuration_names_the_reason() {
    let mut config = WasmModuleConfig::new("sample", rust_example("sample"), WasmKind::Filter);
    config.config = "0".to_string();
    let metrics = Arc::new(WasmMetrics::default());
    let modules = WasmModules::load(&[config], metrics.clone()).expect("engine");
    let status = &modules.status()[0];
    assert_eq!(status.state, "failed");
    assert_eq!(status.reason.as_deref(), Some("init"));
    let message = status.message.as_deref().unwrap_or_default();
    assert!(message.contains("N must be at least 1"), "{message}");
    assert_eq!(metrics.errors("sample", Reason::Init), 1);
    // fail = "open": flows pass.
    assert_eq!(modules.filter(&mixed_flows()), vec![true; 4]);
}

#[test]
fn team_labeller_maps_namespaces_to_teams() {
    let mut config =
        WasmModuleConfig::new("teams", rust_example("team-labeller"), WasmKind::Labeller);
    config.config = "shop=storefront, db=data".to_string();
    let (modules, _) = load(vec![config]);
    let labels = modules.labels(&mixed_flows());
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        labels[0],
        vec![
            pair("source_team", "storefront"),
            pair("destination_team", "data")
        ]
    );
    assert_eq!(
        labels[2],
        vec![
            pair("source_team", "unowned"),
            pair("destination_team", "storefront")
        ]
    );
    assert_eq!(
        modules.status()[0].labels,
        vec!["source_team", "destination_team"]
    );
}

#[test]
fn filters_run_in_order_and_all_must_keep() {
    let mut health = WasmModuleConfig::new(
        "health",
        rust_example("drop-health-checks"),
        WasmKind::Filter,
    );
    health.config = "5432".to_string();
    let drops = WasmModuleConfig::new(
        "drops",
        c_example("keep_drops_dns_errors"),
        WasmKind::Filter,
    );
    let (modules, _) = load(vec![health, drops]);
    assert_eq!(modules.filter(&mixed_flows()), vec![false; 4]);
}

#[test]
fn large_batches_are_split_and_every_flow_gets_one_decision() {
    let (modules, _) = load(vec![WasmModuleConfig::new(
        "keep-drops",
        rust_example("keep-drops-dns-errors"),
        WasmKind::Filter,
    )]);
    let flows: Vec<_> = (0..1000)
        .map(|i| {
            let v = if i % 7 == 0 {
                Verdict::Dropped
            } else {
                Verdict::Forwarded
            };
            flow("a", "b", 80, v)
        })
        .collect();
    let keep = modules.filter(&flows);
    assert_eq!(keep.len(), 1000);
    for (i, k) in keep.iter().enumerate() {
        assert_eq!(*k, i % 7 == 0, "flow {i}");
    }
    assert_eq!(modules.status()[0].flows, 1000);
}
