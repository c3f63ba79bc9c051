//! End to end: pods on one node and on different nodes reach each other through
//! Porin's programs; flows name the right endpoints and identities; counters
//! move; a broken manifest keeps the last good state; `down` leaves nothing.

mod common;

use std::time::Duration;

use common::{TestSandbox, metric_value, str_of, wait_for};
use serde_json::Value;

const NAMESPACES: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    team: shop
---
apiVersion: v1
kind: Namespace
metadata:
  name: tools
"#;

const PODS: &str = r#"
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
      command: ["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0"]
---
apiVersion: v1
kind: Pod
metadata:
  name: client-a
  namespace: shop
  labels:
    app: client
spec:
  nodeName: node-1
  containers:
    - name: c
      image: ignored
      command: ["sleep", "infinity"]
---
apiVersion: v1
kind: Pod
metadata:
  name: client-b
  namespace: tools
  labels:
    app: client
spec:
  nodeName: node-2
  containers:
    - name: c
      image: ignored
      command: ["sleep", "infinity"]
"#;

fn ip_of(sandbox: &TestSandbox, key: &str) -> String {
    str_of(&sandbox.endpoint(key)["endpoint"]["ipv4"]).to_string()
}

fn identity_of(sandbox: &TestSandbox, key: &str) -> u64 {
    sandbox.endpoint(key)["endpoint"]["identity"]
        .as_u64()
        .expect("identity")
}

/// A SYN (no ACK) flow from `src` to `dst` seen at `point` (Hubble's
/// `trace_observation_point`: TO_ENDPOINT or FROM_ENDPOINT).
fn find_flow<'a>(flows: &'a [Value], src: &str, dst: &str, point: &str) -> Option<&'a Value> {
    flows.iter().find(|f| {
        str_of(&f["source"]["pod_name"]) == src
            && str_of(&f["destination"]["pod_name"]) == dst
            && str_of(&f["trace_observation_point"]) == point
            && f["l4"]["TCP"]["flags"]["SYN"] == true
            && f["l4"]["TCP"]["flags"]["ACK"] != true
    })
}

#[test]
fn pods_reach_each_other_and_flows_name_them() {
    let sandbox = TestSandbox::up(&[("00-ns.yaml", NAMESPACES), ("10-pods.yaml", PODS)]);

    // Every endpoint is ready with a cluster identity; different labels, different identities.
    let endpoints = sandbox.endpoints();
    assert_eq!(endpoints.len(), 3, "{endpoints:?}");
    for e in &endpoints {
        assert_eq!(e["endpoint"]["state"], "ready", "{e}");
        assert!(
            e["endpoint"]["identity"].as_u64().unwrap_or(0) >= 256,
            "{e}"
        );
    }
    let web_id = identity_of(&sandbox, "shop/web");
    let a_id = identity_of(&sandbox, "shop/client-a");
    let b_id = identity_of(&sandbox, "tools/client-b");
    assert_ne!(web_id, a_id);
    assert_ne!(
        a_id, b_id,
        "same app label, different namespace: different identity"
    );

    // Same node and across nodes.
    let web = ip_of(&sandbox, "shop/web");
    let url = format!("http://{web}:8080/");
    let curl = [
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-m",
        "3",
        url.as_str(),
    ];
    let same = sandbox.exec_until_ok("shop/client-a", &curl, Duration::from_secs(15));
    assert_eq!(
        String::from_utf8_lossy(&same.stdout),
        "200",
        "same-node request failed"
    );
    let cross = sandbox.exec_until_ok("tools/client-b", &curl, Duration::from_secs(15));
    assert_eq!(
        String::from_utf8_lossy(&cross.stdout),
        "200",
        "cross-node request failed"
    );

    // Flows: the new connection from client-b, seen leaving node-2 and entering web on node-1,
    // with both endpoints resolved to pods and identities.
    let flows = wait_for(Duration::from_secs(5), || {
        let flows = sandbox.flows(500);
        (find_flow(&flows, "client-b", "web", "TO_ENDPOINT").is_some()
            && find_flow(&flows, "client-b", "web", "FROM_ENDPOINT").is_some())
        .then_some(flows)
    })
    .unwrap_or_else(|| {
        let flows = sandbox.flows(500);
        panic!(
            "no flows of the cross-node connection among {} flows: {:#?}",
            flows.len(),
            flows.iter().rev().take(8).collect::<Vec<_>>()
        )
    });
    let to = find_flow(&flows, "client-b", "web", "TO_ENDPOINT").expect("to-endpoint flow");
    assert_eq!(to["node_name"], "node-1");
    assert_eq!(to["verdict"], "FORWARDED");
    assert_eq!(to["traffic_direction"], "INGRESS");
    assert_eq!(to["source"]["namespace"], "tools");
    assert_eq!(to["source"]["identity"].as_u64(), Some(b_id));
    assert_eq!(to["destination"]["identity"].as_u64(), Some(web_id));
    assert_eq!(to["l4"]["TCP"]["destination_port"], 8080);
    assert!(
        to["destination"]["labels"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x == "k8s:app=web")),
        "{to}"
    );
    let from = find_flow(&flows, "client-b", "web", "FROM_ENDPOINT").expect("from-endpoint flow");
    assert_eq!(from["node_name"], "node-2");
    assert_eq!(from["traffic_direction"], "EGRESS");
    assert!(
        find_flow(&flows, "client-a", "web", "FROM_ENDPOINT").is_some(),
        "same-node flow"
    );

    // Counters move, with Cilium's metric names.
    let metrics = wait_for(Duration::from_secs(5), || {
        let m = sandbox.metrics("node-1");
        (metric_value(&m, "cilium_forward_count_total", &["INGRESS"]).unwrap_or(0.0) > 0.0)
            .then_some(m)
    })
    .expect("forward counters on node-1");
    assert!(metric_value(&metrics, "cilium_forward_count_total", &["EGRESS"]).unwrap_or(0.0) > 0.0);
    assert_eq!(
        metric_value(
            &metrics,
            "cilium_endpoint_state",
            &["endpoint_state=\"ready\""]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric_value(&metrics, "cilium_controllers_failing", &[]),
        Some(0.0)
    );

    // A malformed packet is dropped, counted and shown with Cilium's reason.
    let send_truncated = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)\ns.sendto(b'\\x30\\x39\\x15', ('{web}', 0))"
    );
    let out = sandbox.exec("shop/client-a", &["python3", "-c", &send_truncated]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drop = wait_for(Duration::from_secs(5), || {
        sandbox
            .flows(500)
            .into_iter()
            .find(|f| f["verdict"] == "DROPPED" && str_of(&f["source"]["pod_name"]) == "client-a")
    })
    .expect("a DROPPED flow");
    assert_eq!(drop["drop_reason_desc"], "CT_TRUNCATED_OR_INVALID_HEADER");
    assert_eq!(drop["drop_reason"], 135);
    let metrics = wait_for(Duration::from_secs(5), || {
        let m = sandbox.metrics("node-1");
        metric_value(&m, "cilium_drop_count_total", &["Truncated", "EGRESS"]).map(|_| m)
    })
    .expect("drop counter on node-1");
    assert_eq!(
        metric_value(
            &metrics,
            "cilium_drop_count_total",
            &["Truncated", "EGRESS"]
        ),
        Some(1.0)
    );

    sandbox.down_and_check();
}

#[test]
fn broken_manifests_keep_the_last_good_state() {
    let sandbox = TestSandbox::up(&[("00-ns.yaml", NAMESPACES), ("10-pods.yaml", PODS)]);
    let before: Vec<(String, u64)> = sandbox
        .endpoints()
        .iter()
        .map(|e| {
            (
                str_of(&e["endpoint"]["pod"]).to_string(),
                e["endpoint"]["identity"].as_u64().unwrap_or(0),
            )
        })
        .collect();

    // Break the file that defines the namespaces (their labels feed identities), and add
    // a new file with a bad field.
    std::fs::write(
        common::manifest_path(&sandbox, "00-ns.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: [not, a, map]\n",
    )
    .expect("break namespaces");
    std::fs::write(
        common::manifest_path(&sandbox, "20-bad.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\n  namespace: shop\nspec:\n  containers:\n    - name: c\n      image: x\n      ports:\n        - containerPort: abc\n",
    )
    .expect("write bad pod");

    let errors = wait_for(Duration::from_secs(10), || {
        let status = sandbox.porin_json(&["status", "--node", "node-1"]);
        let errors: Vec<String> = status[0]["datastore"]["errors"]
            .as_array()
            .map(|a| a.iter().map(|e| str_of(e).to_string()).collect())
            .unwrap_or_default();
        (errors.len() >= 2).then_some(errors)
    })
    .expect("both broken files reported in porin status");
    let bad = errors
        .iter()
        .find(|e| e.contains("20-bad.yaml"))
        .expect("20-bad.yaml reported");
    assert!(bad.contains("document 1"), "{bad}");
    assert!(
        bad.contains("spec.containers[0].ports[0].containerPort"),
        "{bad}"
    );
    let ns = errors
        .iter()
        .find(|e| e.contains("00-ns.yaml"))
        .expect("00-ns.yaml reported");
    assert!(ns.contains("metadata.labels"), "{ns}");

    // Nothing changed: same endpoints, same identities, traffic still flows.
    std::thread::sleep(Duration::from_millis(500));
    let after: Vec<(String, u64)> = sandbox
        .endpoints()
        .iter()
        .map(|e| {
            (
                str_of(&e["endpoint"]["pod"]).to_string(),
                e["endpoint"]["identity"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        before, after,
        "a broken manifest changed endpoints or identities"
    );
    let web = ip_of(&sandbox, "shop/web");
    let url = format!("http://{web}:8080/");
    let out = sandbox.exec_until_ok(
        "tools/client-b",
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-m",
            "3",
            url.as_str(),
        ],
        Duration::from_secs(15),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");

    // A bad CNI-style request is refused with a clear error and changes nothing.
    let status = sandbox.porin_json(&["status", "--node", "node-1"]);
    let socket = sandbox.state()["nodes"][0]["agent_socket"]
        .as_str()
        .expect("socket")
        .to_string();
    let body = r#"{"namespace":"shop","pod":"ghost","netns":"/run/netns/does-not-exist"}"#;
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_code}",
            "--unix-socket",
            &socket,
            "-H",
            "content-type: application/json",
            "-d",
            body,
            "http://agent/v1/endpoints",
        ])
        .output()
        .expect("curl the agent API");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("400"), "{text}");
    assert!(
        text.contains("shop/ghost") && text.contains("does-not-exist"),
        "{text}"
    );
    let status_after = sandbox.porin_json(&["status", "--node", "node-1"]);
    assert_eq!(status[0]["endpoints"], status_after[0]["endpoints"]);
    assert_eq!(
        status[0]["datapath"]["attached_interfaces"],
        status_after[0]["datapath"]["attached_interfaces"]
    );

    // Fixing the file clears the error.
    std::fs::write(common::manifest_path(&sandbox, "00-ns.yaml"), NAMESPACES)
        .expect("fix namespaces");
    std::fs::remove_file(common::manifest_path(&sandbox, "20-bad.yaml")).expect("remove bad pod");
    wait_for(Duration::from_secs(10), || {
        let status = sandbox.porin_json(&["status", "--node", "node-1"]);
        status[0]["datastore"]["errors"]
            .as_array()
            .is_some_and(|a| a.is_empty())
            .then_some(())
    })
    .expect("errors cleared after the fix");
    sandbox.down_and_check();
}
