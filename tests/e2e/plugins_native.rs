//! End to end: native plugins in a real agent. The example flow exporter
//! (`examples/native-plugin`) is loaded from its shared object, writes the flows of real
//! traffic between two pods (on two nodes) to its file, and is unloaded when disabled; an object built
//! against another ABI version is refused with both versions named; a plugin that panics
//! is disabled and reported while the agent and the exporter go on.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{SHOP_WEB_AND_CLIENT, TestSandbox, pod_yaml, str_of, wait_for};
use porin_testbed::native_plugins::{build_abi_stub, build_example};
use serde_json::Value;

/// The plugins of node-1 in `porin plugins list -o json`.
fn node1_plugins(sandbox: &TestSandbox) -> Vec<Value> {
    let out = sandbox.porin(&["plugins", "list", "-o", "json"]);
    let all: Value = serde_json::from_slice(&out.stdout).expect("plugins list JSON");
    all.as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["node"] == "node-1")
        .map(|e| e["plugin"].clone())
        .collect()
}

fn plugin(sandbox: &TestSandbox, name: &str) -> Value {
    node1_plugins(sandbox)
        .into_iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no plugin {name} on node-1: {:?}", node1_plugins(sandbox)))
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}")))
        .collect()
}

fn agent_maps(sandbox: &TestSandbox) -> String {
    let pid = sandbox.state()["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "node-1"))
        .and_then(|n| n["agent_pid"].as_u64())
        .expect("agent pid of node-1");
    std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("agent maps")
}

fn curl(sandbox: &TestSandbox, web: &str) {
    let url = format!("http://{web}:8080/");
    let out = sandbox.exec_until_ok(
        "shop/client",
        &["curl", "-s", "-m", "2", "-o", "/dev/null", url.as_str()],
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "curl {url} failed");
}

#[test]
fn native_plugins_load_export_flows_fail_safely_and_unload() {
    common::assert_root();
    let exporter = build_example("porin-flow-exporter").expect("build the exporter");
    let panicking = build_example("porin-panicking-plugin").expect("build the panicking plugin");
    let work = tempfile::tempdir().expect("work dir");
    let other_abi = porin_plugin_sdk::native::ABI_VERSION + 1;
    let stub = build_abi_stub(work.path(), other_abi).expect("build the ABI stub");
    let output = work.path().join("flows.jsonl");
    let config = format!(
        r#"
[[plugins.native]]
path = "{exporter}"
[plugins.native.settings]
output = "{output}"
protocols = ["tcp"]

[[plugins.native]]
path = "{stub}"

[[plugins.native]]
path = "{panicking}"
"#,
        exporter = exporter.display(),
        output = output.display(),
        stub = stub.display(),
        panicking = panicking.display(),
    );
    let sandbox = TestSandbox::up_with(&[("00-shop.yaml", SHOP_WEB_AND_CLIENT)], Some(&config));

    // Loaded: in the agent's address space and healthy.
    assert!(agent_maps(&sandbox).contains("libporin_flow_exporter.so"));
    assert_eq!(plugin(&sandbox, "flow-exporter")["health"]["state"], "ok");

    // Another ABI version is refused, naming both versions; the agent runs on.
    let refused = plugin(&sandbox, &format!("libabi_v{other_abi}"));
    let message = str_of(&refused["health"]["message"]);
    assert_eq!(refused["health"]["state"], "failed", "{refused}");
    assert!(
        message.contains(&format!("ABI version {other_abi}"))
            && message.contains(&format!(
                "version {}",
                porin_plugin_sdk::native::ABI_VERSION
            )),
        "{message}"
    );

    // Real traffic reaches the exporter's file, with the pods resolved through the agent.
    let web = str_of(&sandbox.endpoint("shop/web")["endpoint"]["ipv4"]).to_string();
    curl(&sandbox, &web);
    let flows = wait_for(Duration::from_secs(10), || {
        let l = lines(&output);
        l.iter()
            .any(|f| f["destination"]["port"] == 8080 && f["destination"]["pod"] == "web")
            .then_some(l)
    })
    .unwrap_or_else(|| panic!("no flow to web:8080 in {}", output.display()));
    assert!(
        flows.iter().all(|f| f["protocol"] == 6),
        "protocols = [\"tcp\"] not applied: {flows:?}"
    );
    assert!(
        flows
            .iter()
            .any(|f| f["source"]["pod"] == "client" && f["source"]["namespace"] == "shop")
    );

    // Its metrics and status come through the ABI.
    let status = sandbox.porin_json(&["plugins", "status", "flow-exporter", "--node", "node-1"]);
    let node1 = &status[0];
    assert_eq!(
        node1["abi_version"],
        porin_plugin_sdk::native::ABI_VERSION,
        "{node1}"
    );
    assert!(node1["plugin"]["written"].as_u64() > Some(0), "{node1}");
    assert!(
        str_of(&node1["metrics"]).contains("porin_flow_exporter_flows_written_total"),
        "{node1}"
    );

    // ... and its metrics are served with the agent's on :9962.
    let metrics = sandbox.metrics("node-1");
    assert!(
        metrics.contains("porin_flow_exporter_flows_written_total")
            && metrics.contains("cilium_endpoint_state")
            && metrics.trim_end().ends_with("# EOF"),
        "{metrics}"
    );

    // A Pod change makes the buggy plugin panic: caught, disabled, reported.
    // A Pod for another node: a Pod change the agents see, with nothing to wire.
    let late = pod_yaml("shop", "late", "late", "node-elsewhere", None);
    std::fs::write(common::manifest_path(&sandbox, "10-late.yaml"), late).expect("write");
    let failed = wait_for(Duration::from_secs(10), || {
        let p = plugin(&sandbox, "panicking");
        (p["health"]["state"] == "failed").then_some(p)
    })
    .expect("the panicking plugin reported failed");
    assert!(
        str_of(&failed["health"]["message"]).contains("panicked: bug in the panicking example"),
        "{failed}"
    );
    // The agent and the exporter are unaffected.
    let before = lines(&output).len();
    curl(&sandbox, &web);
    assert!(
        wait_for(Duration::from_secs(10), || (lines(&output).len() > before)
            .then_some(()))
        .is_some(),
        "the exporter stopped after another plugin panicked"
    );
    assert_eq!(plugin(&sandbox, "flow-exporter")["health"]["state"], "ok");

    // Disabled at runtime (on every node): stopped, and its object unloaded from the agent.
    let started = Instant::now();
    let out = sandbox.porin(&["plugins", "disable", "flow-exporter"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "flow-exporter disabled in {} ms",
        started.elapsed().as_millis()
    );
    assert!(
        !agent_maps(&sandbox).contains("libporin_flow_exporter.so"),
        "the exporter's object is still mapped"
    );
    let after = lines(&output).len();
    curl(&sandbox, &web);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        lines(&output).len(),
        after,
        "a disabled exporter still writes"
    );
    sandbox.down_and_check();
}
