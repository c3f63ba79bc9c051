//! End to end: user WebAssembly modules in a real agent. Every example of
//! `examples/wasm` (built by the test) changes what `porin observe` and the
//! Hubble metrics show: the health-check filter hides a pod's health port, the
//! team labeller adds `source_team`/`destination_team` to `hubble_*`, the C
//! filter (hot-reloaded in place of the first one) and its Rust twin (reloaded
//! after it) keep only drops, a broken replacement keeps the last good one running, and the sampler (after a config change and
//! an agent restart) keeps one forwarded flow in three.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{TestSandbox, str_of, wait_for};
use porin_testbed::wasm_guests::{c_example, rust_example};
use serde_json::Value;

const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: Namespace
metadata:
  name: tools
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  labels:
    app: web
spec:
  nodeName: node-1
  containers:
    - name: web
      image: ignored
      command: ["sh", "-c", "python3 -m http.server 8081 --bind 0.0.0.0 & exec python3 -m http.server 8080 --bind 0.0.0.0"]
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: tools
  labels:
    app: client
spec:
  nodeName: node-1
  containers:
    - name: c
      image: ignored
      command: ["sleep", "infinity"]
"#;

fn copy_guest(from: PathBuf, dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    to
}

/// Replace a module file atomically (write, rename), as a deployment would.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).expect("write module");
    std::fs::rename(&tmp, path).expect("rename module");
}

fn agent_config(filter: &Path, filter_config: &str, labeller: &Path) -> String {
    format!(
        r#"metrics = ["flow:labelsContext=source_namespace,destination_namespace"]

[[plugins.observe.wasm]]
name = "filter"
path = "{}"
kind = "filter"
config = "{filter_config}"

[[plugins.observe.wasm]]
name = "teams"
path = "{}"
kind = "labeller"
config = "shop=storefront,tools=platform"
"#,
        filter.display(),
        labeller.display()
    )
}

/// Flows of node-1 in the ring.
fn node1_flows(sandbox: &TestSandbox) -> Vec<Value> {
    sandbox
        .flows(4000)
        .into_iter()
        .filter(|f| f["node_name"] == "node-1")
        .collect()
}

fn to_port(flows: &[Value], port: u64) -> usize {
    flows
        .iter()
        .filter(|f| {
            f["l4"]["TCP"]["destination_port"] == port || f["l4"]["TCP"]["source_port"] == port
        })
        .count()
}

/// How many of `flows` are drops.
fn dropped(flows: &[Value]) -> usize {
    flows.iter().filter(|f| f["verdict"] == "DROPPED").count()
}

/// The observe plugin's WASM module `name` on node-1, from `porin plugins list -o json`.
fn module(sandbox: &TestSandbox, name: &str) -> Value {
    let list = sandbox.porin(&["plugins", "list", "-o", "json"]);
    let all: Value = serde_json::from_slice(&list.stdout).expect("plugins list JSON");
    all.as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["node"] == "node-1" && e["plugin"]["name"] == "observe")
        .flat_map(|e| e["wasm"].as_array().cloned().unwrap_or_default())
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no module {name} on node-1: {all}"))
}

/// Hubble metrics of node-1 (`:9965` in its namespace).
fn hubble_metrics(sandbox: &TestSandbox) -> String {
    let state = sandbox.state();
    let node = state["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "node-1"))
        .expect("node-1")
        .clone();
    let host = match str_of(&node["metrics_addr"]).rsplit_once(':') {
        Some(("0.0.0.0", _)) | None => "127.0.0.1".to_string(),
        Some((h, _)) => h.to_string(),
    };
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", str_of(&node["netns"])))
        .args(["curl", "-s", "-m", "3"])
        .arg(format!("http://{host}:9965/metrics"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn curl(sandbox: &TestSandbox, web: &str, port: u16) {
    let url = format!("http://{web}:{port}/");
    let out = sandbox.exec_until_ok(
        "tools/client",
        &["curl", "-s", "-m", "2", "-o", "/dev/null", url.as_str()],
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "curl {url} failed");
}

fn send_truncated(sandbox: &TestSandbox, web: &str) {
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)\ns.sendto(b'\\x30\\x39\\x15', ('{web}', 0))"
    );
    let out = sandbox.exec("tools/client", &["python3", "-c", &script]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn examples_change_what_observe_and_metrics_show() {
    common::assert_root();
    let modules = tempfile::tempdir().expect("module dir");
    let filter = copy_guest(
        rust_example("drop-health-checks").expect("build"),
        modules.path(),
        "filter.wasm",
    );
    let labeller = copy_guest(
        rust_example("team-labeller").expect("build"),
        modules.path(),
        "teams.wasm",
    );
    let config = agent_config(&filter, "8081", &labeller);
    let sandbox = TestSandbox::up_with(&[("00-pods.yaml", PODS)], Some(&config));
    let web = str_of(&sandbox.endpoint("shop/web")["endpoint"]["ipv4"]).to_string();

    // 1. drop-health-checks (Rust, config "8081"): 8080 shows, 8081 never does.
    curl(&sandbox, &web, 8081);
    curl(&sandbox, &web, 8080);
    let flows = wait_for(Duration::from_secs(10), || {
        let f = node1_flows(&sandbox);
        (to_port(&f, 8080) > 0).then_some(f)
    })
    .expect("flows to 8080 in porin observe");
    assert_eq!(to_port(&flows, 8081), 0, "health port shown: {flows:#?}");
    let health = module(&sandbox, "filter");
    assert_eq!(health["state"], "running", "{health}");
    assert!(health["flows"].as_u64() > Some(0), "{health}");

    // The team labeller's labels are on the Hubble metrics.
    let text = wait_for(Duration::from_secs(10), || {
        let t = hubble_metrics(&sandbox);
        t.contains(r#"source_team="platform",destination_team="storefront""#)
            .then_some(t)
    })
    .unwrap_or_else(|| panic!("no team labels:\n{}", hubble_metrics(&sandbox)));
    assert!(
        text.contains("porin_wasm_module_flows_total{module=\"teams\"}"),
        "{text}"
    );
    let plugins = sandbox.porin(&["plugins", "list"]);
    let table = String::from_utf8_lossy(&plugins.stdout);
    assert!(table.contains("observe/wasm/teams"), "{table}");

    // 2. Hot reload: the C filter keeping only drops replaces the file.
    let before = to_port(&node1_flows(&sandbox), 8080);
    replace(
        &filter,
        &std::fs::read(c_example("keep_drops_dns_errors").expect("build")).expect("read"),
    );
    wait_for(Duration::from_secs(10), || {
        (module(&sandbox, "filter")["reloads"] == 1).then_some(())
    })
    .expect("the agent reloaded the filter");
    curl(&sandbox, &web, 8080);
    send_truncated(&sandbox, &web);
    wait_for(Duration::from_secs(10), || {
        node1_flows(&sandbox)
            .iter()
            .any(|f| f["verdict"] == "DROPPED")
            .then_some(())
    })
    .expect("the drop is shown");
    assert_eq!(
        to_port(&node1_flows(&sandbox), 8080),
        before,
        "forwarded flows after the reload are filtered out"
    );

    // Its Rust twin (the same filter written with the Rust SDK) replaces it: a new drop
    // is shown, forwarded flows still are not.
    let drops_before = dropped(&node1_flows(&sandbox));
    replace(
        &filter,
        &std::fs::read(rust_example("keep-drops-dns-errors").expect("build")).expect("read"),
    );
    wait_for(Duration::from_secs(10), || {
        (module(&sandbox, "filter")["reloads"] == 2).then_some(())
    })
    .expect("the agent reloaded the Rust filter");
    curl(&sandbox, &web, 8080);
    send_truncated(&sandbox, &web);
    wait_for(Duration::from_secs(10), || {
        (dropped(&node1_flows(&sandbox)) > drops_before).then_some(())
    })
    .expect("the Rust filter shows the new drop");
    assert_eq!(
        to_port(&node1_flows(&sandbox), 8080),
        before,
        "the Rust filter filters forwarded flows out"
    );

    // A broken replacement is refused; the Rust filter keeps running.
    replace(&filter, b"this is not WebAssembly");
    let refused = wait_for(Duration::from_secs(10), || {
        let m = module(&sandbox, "filter");
        m["last_reload_error"].is_string().then_some(m)
    })
    .expect("the broken file was tried");
    assert_eq!(refused["state"], "running", "{refused}");
    assert!(
        str_of(&refused["last_reload_error"]).starts_with("load:"),
        "{refused}"
    );
    curl(&sandbox, &web, 8080);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        to_port(&node1_flows(&sandbox), 8080),
        before,
        "still only drops"
    );
    let text = hubble_metrics(&sandbox);
    assert!(
        text.contains(r#"porin_wasm_module_errors_total{module="filter",reason="load"} 1"#),
        "{text}"
    );

    // 3. sample (config "3"), by changing node-1's configuration and restarting it.
    let sample = copy_guest(
        rust_example("sample").expect("build"),
        modules.path(),
        "sample.wasm",
    );
    let node_config = sandbox.state_dir.path().join("nodes/node-1/porin.toml");
    let text = std::fs::read_to_string(&node_config).expect("node config");
    let text = text
        .replace(&filter.display().to_string(), &sample.display().to_string())
        .replace(r#"config = "8081""#, r#"config = "3""#);
    std::fs::write(&node_config, text).expect("write node config");
    let out = sandbox.porin(&["sandbox", "restart-agent", "node-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for _ in 0..6 {
        curl(&sandbox, &web, 8080);
    }
    // Every third forwarded flow the sampler saw is kept (this phase has no drops).
    let (kept, seen) = wait_for(Duration::from_secs(10), || {
        let seen = module(&sandbox, "filter")["flows"].as_u64()?;
        let kept = node1_flows(&sandbox).len() as u64;
        (seen >= 12 && kept == seen.div_ceil(3)).then_some((kept, seen))
    })
    .unwrap_or_else(|| {
        panic!(
            "sampler: {} flows kept, module {}",
            node1_flows(&sandbox).len(),
            module(&sandbox, "filter")
        )
    });
    assert!(kept < seen, "{kept} of {seen}");
    sandbox.down_and_check();
}
