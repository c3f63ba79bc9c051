//! The flow pipeline with WebAssembly modules: the examples (built by the
//! test) filter what reaches the ring and label the Hubble metrics.

use std::sync::Arc;

use hubble_proto::flow::{self as pb, Verdict};
use porin_observe::entry::FlowEntry;
use porin_observe::pipeline::process;
use porin_observe::{FlowRing, HubbleMetrics, MetricSpec};
use porin_testbed::wasm_guests::{c_example, rust_example};
use porin_wasm::{FailMode, WasmKind, WasmMetrics, WasmModuleConfig, WasmModules};
use prometheus_client::registry::Registry;

fn flow(src_ns: &str, dst_ns: &str, verdict: Verdict) -> pb::Flow {
    let ep = |ns: &str| pb::Endpoint {
        namespace: ns.to_string(),
        pod_name: format!("{ns}-1"),
        ..Default::default()
    };
    pb::Flow {
        verdict: verdict as i32,
        source: Some(ep(src_ns)),
        destination: Some(ep(dst_ns)),
        ..Default::default()
    }
}

fn scrape(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("encode");
    out
}

#[test]
fn filters_decide_what_is_stored_and_labellers_label_the_metrics() {
    let mut registry = Registry::default();
    let spec = MetricSpec::parse("flow:labelsContext=source_namespace").expect("spec");
    let metrics = HubbleMetrics::register(&[spec], &mut registry).expect("metrics");
    let wasm_metrics = Arc::new(WasmMetrics::register(&mut registry));
    let mut teams = WasmModuleConfig::new(
        "teams",
        rust_example("team-labeller").expect("build"),
        WasmKind::Labeller,
    );
    teams.config = "shop=storefront".to_string();
    let drops = WasmModuleConfig::new(
        "drops",
        c_example("keep_drops_dns_errors").expect("build"),
        WasmKind::Filter,
    );
    let modules = WasmModules::load(&[drops, teams], wasm_metrics).expect("engine");
    let ring = FlowRing::new(16);
    process(
        entries(vec![
            flow("shop", "db", Verdict::Forwarded),
            flow("shop", "db", Verdict::Dropped),
            flow("tools", "shop", Verdict::Dropped),
        ]),
        &ring,
        Some(&metrics),
        Some(&modules),
    );
    let stored: Vec<_> = ring.snapshot().iter().map(|f| f.flow().verdict).collect();
    assert_eq!(stored, vec![Verdict::Dropped as i32; 2]);
    let text = scrape(&registry);
    let labelled =
        r#"source_namespace="shop",source_team="storefront",destination_team="unowned"} 1"#;
    assert!(
        text.lines()
            .any(|l| l.starts_with("hubble_flows_processed_total{") && l.ends_with(labelled)),
        "no flow series labelled by the labeller in:\n{text}"
    );
    for line in [
        r#"porin_wasm_module_flows_total{module="drops"} 3"#,
        r#"porin_wasm_module_flows_total{module="teams"} 2"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
}

#[test]
fn a_quarantined_closed_filter_stores_nothing_and_the_pipeline_goes_on() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("trap.wasm");
    std::fs::write(
        &path,
        r#"(module (memory (export "memory") 5)
  (func (export "porin_flow_0_1") (result i32) i32.const 1)
  (func (export "porin_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "porin_init") (param i32 i32) (result i32) i32.const 0)
  (func (export "porin_filter") (param i32) (result i32) unreachable))"#,
    )
    .expect("write");
    let mut config = WasmModuleConfig::new("trap", &path, WasmKind::Filter);
    config.fail = FailMode::Closed;
    let modules = WasmModules::load(&[config], Arc::new(WasmMetrics::default())).expect("engine");
    let ring = FlowRing::new(16);
    for _ in 0..3 {
        process(
            entries(vec![flow("a", "b", Verdict::Dropped)]),
            &ring,
            None,
            Some(&modules),
        );
    }
    assert!(ring.is_empty());
    assert_eq!(modules.status()[0].state, "quarantined");
}

/// Flows as the ring entries the pipeline stage takes.
fn entries(flows: Vec<pb::Flow>) -> Vec<FlowEntry> {
    flows.into_iter().map(FlowEntry::ready).collect()
}
