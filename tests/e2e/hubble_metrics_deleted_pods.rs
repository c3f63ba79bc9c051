//! End to end: Hubble metric series that name a pod (`sourceContext=pod`) leave the
//! agent's `:9965` once the pod is gone for `deleted_pod_metrics_after_s`, while the
//! series of a pod that still exists stay (Cilium removes them after a minute; the test
//! sets two seconds).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{TestSandbox, manifest_path, str_of, wait_for};

const SERVER: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  nodeName: node-1
  containers:
    - name: web
      image: ignored
      command: ["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0"]
"#;

const CLIENTS: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: tools}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: tools, labels: {app: client}}
spec:
  nodeName: node-1
  containers:
    - {name: c, image: ignored, command: ["sleep", "infinity"]}
---
apiVersion: v1
kind: Pod
metadata: {name: stays, namespace: tools, labels: {app: stays}}
spec:
  nodeName: node-1
  containers:
    - {name: c, image: ignored, command: ["sleep", "infinity"]}
"#;

/// `client` gone from the manifests, `stays` kept.
const CLIENTS_AFTER: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: tools}
---
apiVersion: v1
kind: Pod
metadata: {name: stays, namespace: tools, labels: {app: stays}}
spec:
  nodeName: node-1
  containers:
    - {name: c, image: ignored, command: ["sleep", "infinity"]}
"#;

const OBSERVE: &str = r#"metrics = ["flow:sourceContext=pod"]
deleted_pod_metrics_after_s = 2
"#;

fn fetch(sandbox: &TestSandbox, pod: &str, url: &str) {
    let out = sandbox.exec_until_ok(
        pod,
        &["curl", "-s", "-m", "2", "-o", "/dev/null", url],
        Duration::from_secs(20),
    );
    assert!(
        out.status.success(),
        "{pod} -> {url}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        sandbox.agent_logs()
    );
}

fn series_of(metrics: &str, source: &str) -> usize {
    metrics
        .lines()
        .filter(|l| l.starts_with("hubble_flows_processed_total{"))
        .filter(|l| l.contains(&format!("source=\"{source}\"")))
        .count()
}

#[test]
fn series_of_a_deleted_pod_leave_after_the_delay() {
    let sandbox = TestSandbox::up_with_nodes(
        &[("00-server.yaml", SERVER), ("10-clients.yaml", CLIENTS)],
        Some(OBSERVE),
        1,
    );
    let web = str_of(&sandbox.endpoint("shop/web")["endpoint"]["ipv4"]).to_string();
    let url = format!("http://{web}:8080/");
    fetch(&sandbox, "tools/client", &url);
    fetch(&sandbox, "tools/stays", &url);
    let both = wait_for(Duration::from_secs(10), || {
        let m = sandbox.hubble_metrics("node-1");
        (series_of(&m, "tools/client") > 0 && series_of(&m, "tools/stays") > 0).then_some(m)
    });
    assert!(
        both.is_some(),
        "both pods' series expected:\n{}",
        sandbox.hubble_metrics("node-1")
    );

    // The pod goes: out of the manifests, and its endpoint deleted as the CNI DEL would.
    std::fs::write(manifest_path(&sandbox, "10-clients.yaml"), CLIENTS_AFTER)
        .expect("rewrite the manifest");
    let state = sandbox.state();
    let socket = state["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "node-1"))
        .map(|n| str_of(&n["agent_socket"]).to_string())
        .expect("node-1's agent socket");
    let deleted = Command::new("curl")
        .args(["-sS", "-f", "-X", "DELETE", "--unix-socket", &socket])
        .arg("http://agent/v1/endpoints/tools/client")
        .output()
        .expect("curl");
    assert!(
        deleted.status.success(),
        "deleting the endpoint: {}",
        String::from_utf8_lossy(&deleted.stderr)
    );

    let gone = wait_for(Duration::from_secs(20), || {
        let m = sandbox.hubble_metrics("node-1");
        (series_of(&m, "tools/client") == 0).then_some(m)
    })
    .unwrap_or_else(|| {
        panic!(
            "tools/client's series still there:\n{}\n{}",
            sandbox.hubble_metrics("node-1"),
            sandbox.agent_logs()
        )
    });
    assert!(
        series_of(&gone, "tools/stays") > 0,
        "the living pod's series stay:\n{gone}"
    );
    sandbox.down_and_check();
}
