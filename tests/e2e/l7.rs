//! End to end: the seed article's `admin-api-access` enforced by the node's L7
//! HTTP proxy in a sandbox with real agents. `payments-admin-api` is Python's
//! http.server; `monitoring/prometheus` and `ops/ops-toolbox` use curl.
//!
//! Steering: the datapath redirect of ports with HTTP rules to the proxy is
//! not wired yet (the FQDN/DNS side of issue 7 owns it), so the clients talk
//! to node-1's proxy (`:15080` on the node address) and the proxy is told the
//! original destination explicitly (`static_destination`). For the same
//! reason the proxy reaches the server as `reserved:host`, which the
//! `l7-proxy-upstream` policy below allows; with the redirect, proxied
//! connections keep the client's identity and that policy goes away.
//! The HTTP verdicts are the proxy's own, judged with the client's identity.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{TestSandbox, str_of, wait_for};
use serde_json::Value;

const ADMIN_API_ACCESS: &str = include_str!("../../examples/policies/admin-api-access.yaml");

/// The node's proxy reaches the admin API as the host until the redirect exists.
const PROXY_UPSTREAM: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: l7-proxy-upstream
  namespace: payments
spec:
  endpointSelector:
    matchLabels:
      app: payments-admin-api
  ingress:
    - fromEntities: [host]
      toPorts:
        - ports:
            - port: "8080"
              protocol: TCP
"#;

fn pods(www: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: payments}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: monitoring}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: ops}}
---
apiVersion: v1
kind: Pod
metadata:
  name: payments-admin-api
  namespace: payments
  labels: {{app: payments-admin-api}}
spec:
  nodeName: node-1
  containers:
    - name: admin
      image: ignored
      command: ["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0", "--directory", "{www}"]
---
apiVersion: v1
kind: Pod
metadata:
  name: prometheus
  namespace: monitoring
  labels: {{app: prometheus}}
spec:
  nodeName: node-1
  containers:
    - name: prometheus
      image: ignored
      command: ["sleep", "infinity"]
---
apiVersion: v1
kind: Pod
metadata:
  name: ops-toolbox
  namespace: ops
  labels: {{app: ops-toolbox}}
spec:
  nodeName: node-1
  containers:
    - name: toolbox
      image: ignored
      command: ["sleep", "infinity"]
"#
    )
}

const AGENT_CONFIG: &str = r#"metrics = ["httpV2:exemplars=true;labelsContext=source_namespace,destination_namespace"]

[plugins.policy]
enabled = true

[plugins.policy.l7_proxy]
listen = "0.0.0.0:15080"
static_destination = "payments/payments-admin-api:8080"
"#;

/// `curl -X METHOD url` from `pod`: the status code and the body.
fn curl(sandbox: &TestSandbox, pod: &str, method: &str, url: &str) -> (u16, String) {
    let out = sandbox.exec(
        pod,
        &[
            "curl",
            "-s",
            "-m",
            "5",
            "-X",
            method,
            "-H",
            "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "-w",
            "\n%{http_code}",
            url,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn l7_flows(sandbox: &TestSandbox) -> Vec<Value> {
    let out = sandbox.porin(&["observe", "--type", "l7", "--last", "100", "-o", "json"]);
    assert!(
        out.status.success(),
        "observe --type l7 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("flow JSON")["flow"].clone())
        .collect()
}

#[test]
fn admin_api_access_through_the_l7_proxy() {
    let www = tempfile::tempdir().expect("www");
    std::fs::write(www.path().join("metrics"), "payments_up 1\n").expect("metrics file");
    std::fs::create_dir(www.path().join("admin")).expect("admin dir");
    std::fs::write(www.path().join("admin").join("users"), "alice\n").expect("users file");
    let sandbox = TestSandbox::up_with(
        &[
            ("00-pods.yaml", &pods(&www.path().display().to_string())),
            ("10-admin-api-access.yaml", ADMIN_API_ACCESS),
            ("20-l7-proxy-upstream.yaml", PROXY_UPSTREAM),
        ],
        Some(AGENT_CONFIG),
    );
    let state = sandbox.state();
    let node = state["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "node-1"))
        .expect("node-1")
        .clone();
    let proxy = format!("http://{}:15080", str_of(&node["underlay_ip"]));

    // monitoring: GET /metrics passes (the server's file), once the server is up.
    let metrics_url = format!("{proxy}/metrics");
    let got = wait_for(Duration::from_secs(15), || {
        let r = curl(&sandbox, "monitoring/prometheus", "GET", &metrics_url);
        (r.0 == 200).then_some(r)
    })
    .unwrap_or_else(|| {
        panic!(
            "GET /metrics from monitoring never passed: {:?}\n{}",
            curl(&sandbox, "monitoring/prometheus", "GET", &metrics_url),
            sandbox.agent_logs()
        )
    });
    assert_eq!(got.1, "payments_up 1\n");
    // POST and other paths: Cilium's 403.
    assert_eq!(
        curl(&sandbox, "monitoring/prometheus", "POST", &metrics_url),
        (403, "Access denied\r\n".to_owned())
    );
    let users_url = format!("{proxy}/admin/users");
    assert_eq!(
        curl(&sandbox, "monitoring/prometheus", "GET", &users_url).0,
        403
    );
    // ops: full access (http.server answers POST with 501: it reached the server).
    assert_eq!(
        curl(&sandbox, "ops/ops-toolbox", "GET", &users_url),
        (200, "alice\n".to_owned())
    );
    assert_eq!(curl(&sandbox, "ops/ops-toolbox", "POST", &users_url).0, 501);

    // L7 flows in `porin observe --type l7 -o json`.
    let flows = wait_for(Duration::from_secs(10), || {
        let f = l7_flows(&sandbox);
        (f.len() >= 10).then_some(f)
    })
    .unwrap_or_else(|| panic!("L7 flows missing: {:#?}", l7_flows(&sandbox)));
    let find = |kind: &str, method: &str, path: &str, ns: &str| {
        flows
            .iter()
            .find(|f| {
                f["l7"]["type"] == kind
                    && f["l7"]["http"]["method"] == method
                    && str_of(&f["l7"]["http"]["url"]).ends_with(path)
                    && (f["source"]["namespace"] == ns || f["destination"]["namespace"] == ns)
            })
            .unwrap_or_else(|| panic!("no {kind} {method} {path} of {ns} in {flows:#?}"))
    };
    let get = find("REQUEST", "GET", "/metrics", "monitoring");
    assert_eq!(get["Type"], "L7");
    assert_eq!(get["verdict"], "FORWARDED");
    assert_eq!(get["source"]["pod_name"], "prometheus");
    assert_eq!(get["destination"]["pod_name"], "payments-admin-api");
    assert_eq!(get["traffic_direction"], "INGRESS");
    assert_eq!(get["event_type"]["type"], 129);
    assert_eq!(get["l7"]["http"]["protocol"], "HTTP/1.1");
    let post = find("REQUEST", "POST", "/metrics", "monitoring");
    assert_eq!(post["verdict"], "DROPPED");
    let denied = find("RESPONSE", "POST", "/metrics", "monitoring");
    assert_eq!(denied["l7"]["http"]["code"], 403);
    assert_eq!(denied["source"]["pod_name"], "payments-admin-api");
    let ok = find("RESPONSE", "GET", "/admin/users", "ops");
    assert_eq!(ok["l7"]["http"]["code"], 200);
    assert!(
        ok["l7"]["latency_ns"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .or_else(|| ok["l7"]["latency_ns"].as_u64())
            .is_some_and(|n| n > 0),
        "{ok}"
    );
    assert_eq!(
        ok["trace_context"]["parent"]["trace_id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );

    // hubble_http_* on :9965 with exemplars.
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", str_of(&node["netns"])))
        .args([
            "curl",
            "-s",
            "-m",
            "3",
            "-H",
            "Accept: application/openmetrics-text",
            "http://127.0.0.1:9965/metrics",
        ])
        .output()
        .expect("curl :9965");
    let text = String::from_utf8_lossy(&out.stdout);
    let forbidden = text
        .lines()
        .find(|l| {
            l.starts_with("hubble_http_requests_total{")
                && l.contains("status=\"403\"")
                && l.contains("reporter=\"server\"")
                && l.contains("source_namespace=\"monitoring\"")
        })
        .unwrap_or_else(|| panic!("no 403 series:\n{text}"));
    assert!(
        forbidden.contains("# {traceID=\"4bf92f3577b34da6a3ce929d0e0e4736\"}"),
        "{forbidden}"
    );
    assert!(
        text.lines().any(|l| l.starts_with(
            "hubble_http_request_duration_seconds_count{method=\"GET\",reporter=\"server\""
        )),
        "{text}"
    );
    sandbox.down_and_check();
}
