//! End to end: the seed article's `admin-api-access` enforced by the node's L7
//! HTTP proxy through the datapath's ingress redirection, in a sandbox with real
//! agents. `payments-admin-api` (node-1) is Python's http.server; the clients
//! use curl against the server's pod IP, never the proxy: `monitoring` from
//! node-1 and node-2, `ops` from node-2, `shop` (no rule) from node-1.
//! node-1's pod program hands the connections the ingress rules send to the
//! proxy to its transparent listener; the proxy judges them with the client's
//! identity, answers 403 or forwards to the pod with the ingress proxy's mark
//! (not judged again), and the pod sees the proxy's connection only. `ops` is
//! allowed without HTTP rules on the same port: its connections go through the
//! proxy too (Cilium redirects the whole port) and every request passes as an
//! L7 flow.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{TestSandbox, str_of, wait_for};
use serde_json::Value;

const ADMIN_API_ACCESS: &str = include_str!("../../examples/policies/admin-api-access.yaml");

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
      ports: [{{name: http, containerPort: 8080, protocol: TCP}}]
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
  name: prometheus-remote
  namespace: monitoring
  labels: {{app: prometheus}}
spec:
  nodeName: node-2
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
  nodeName: node-2
  containers:
    - name: toolbox
      image: ignored
      command: ["sleep", "infinity"]
---
apiVersion: v1
kind: Namespace
metadata: {{name: shop}}
---
apiVersion: v1
kind: Pod
metadata:
  name: shop-client
  namespace: shop
  labels: {{app: shop-client}}
spec:
  nodeName: node-1
  containers:
    - name: client
      image: ignored
      command: ["sleep", "infinity"]
"#
    )
}

const AGENT_CONFIG: &str = r#"metrics = ["httpV2:exemplars=true;labelsContext=source_namespace,destination_namespace"]

[plugins.policy]
enabled = true

[plugins.policy.l7_proxy]
"#;

/// `curl -X METHOD url` from `pod`: the status code and the body.
fn curl(sandbox: &TestSandbox, pod: &str, method: &str, url: &str) -> (u16, String) {
    let out = sandbox.exec(
        pod,
        &[
            "curl",
            "-s",
            "-m",
            "3",
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

/// node-2's clients reach node-1 through WireGuard: the proxy's replies carry the pod's
/// address, so they are encrypted like the pod's own.
const WIREGUARD: &str = r#"
[plugins.encryption]
enabled = true
type = "wireguard"
"#;

#[test]
fn admin_api_access_through_the_l7_proxy() {
    admin_api_access(AGENT_CONFIG, ADMIN_API_ACCESS);
}

#[test]
fn admin_api_access_through_the_l7_proxy_with_wireguard() {
    admin_api_access(&format!("{AGENT_CONFIG}{WIREGUARD}"), ADMIN_API_ACCESS);
}

/// The policy names the port (`port: http`, the server's container port 8080): the
/// datapath's entries and the proxy's per-connection rules resolve it alike.
#[test]
fn admin_api_access_with_a_named_port() {
    let named = ADMIN_API_ACCESS.replace("port: \"8080\"", "port: http");
    assert_ne!(named, ADMIN_API_ACCESS, "the policy names port 8080");
    admin_api_access(AGENT_CONFIG, &named);
}

fn admin_api_access(agent_config: &str, policy: &str) {
    let www = tempfile::tempdir().expect("www");
    std::fs::write(www.path().join("metrics"), "payments_up 1\n").expect("metrics file");
    std::fs::create_dir(www.path().join("admin")).expect("admin dir");
    std::fs::write(www.path().join("admin").join("users"), "alice\n").expect("users file");
    let sandbox = TestSandbox::up_with(
        &[
            ("00-pods.yaml", &pods(&www.path().display().to_string())),
            ("10-admin-api-access.yaml", policy),
        ],
        Some(agent_config),
    );
    let state = sandbox.state();
    let node = state["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "node-1"))
        .expect("node-1")
        .clone();
    let server =
        str_of(&sandbox.endpoint("payments/payments-admin-api")["endpoint"]["ipv4"]).to_string();
    if agent_config.contains("wireguard") {
        let node2 = state["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["name"] == "node-2"))
            .expect("node-2");
        let wait_route = || {
            let out = Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", str_of(&node2["netns"])))
                .args(["ip", "route", "get", &server])
                .output()
                .expect("ip route get");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.contains("dev pwg").then_some(text)
        };
        wait_for(Duration::from_secs(20), wait_route).unwrap_or_else(|| {
            panic!(
                "node-2 does not route {server} through WireGuard\n{}",
                sandbox.agent_logs()
            )
        });
    }
    let metrics_url = format!("http://{server}:8080/metrics");
    let users_url = format!("http://{server}:8080/admin/users");

    for prometheus in ["monitoring/prometheus", "monitoring/prometheus-remote"] {
        // GET /metrics passes (the server's file), once the server is up.
        let got = wait_for(Duration::from_secs(20), || {
            let r = curl(&sandbox, prometheus, "GET", &metrics_url);
            (r.0 == 200).then_some(r)
        })
        .unwrap_or_else(|| {
            panic!(
                "GET /metrics from {prometheus} never passed: {:?}\n{}",
                curl(&sandbox, prometheus, "GET", &metrics_url),
                sandbox.agent_logs()
            )
        });
        assert_eq!(got.1, "payments_up 1\n", "{prometheus}");
        // POST and other paths: Cilium's 403, from the proxy (the server has the file).
        assert_eq!(
            curl(&sandbox, prometheus, "POST", &metrics_url),
            (403, "Access denied\r\n".to_owned()),
            "POST /metrics from {prometheus}"
        );
        assert_eq!(
            curl(&sandbox, prometheus, "GET", &users_url),
            (403, "Access denied\r\n".to_owned()),
            "GET /admin/users from {prometheus}"
        );
    }
    // ops (node-2): full access (http.server answers POST with 501: it reached the server).
    // Allowed without HTTP rules on a port that has them: through the proxy all the same
    // (Cilium redirects the whole port), with allow-all at L7.
    assert_eq!(
        curl(&sandbox, "ops/ops-toolbox", "GET", &users_url),
        (200, "alice\n".to_owned())
    );
    assert_eq!(curl(&sandbox, "ops/ops-toolbox", "POST", &users_url).0, 501);
    let anything_url = format!("http://{server}:8080/anything");
    assert_eq!(
        curl(&sandbox, "ops/ops-toolbox", "POST", &anything_url).0,
        501,
        "POST /anything from ops reaches the server"
    );
    // Another namespace: dropped at L3/L4 (no answer at all, not a 403).
    assert_eq!(
        curl(&sandbox, "shop/shop-client", "GET", &metrics_url).0,
        0,
        "shop must not reach the admin API"
    );

    // L7 flows in `porin observe --type l7 -o json`.
    let flows = wait_for(Duration::from_secs(10), || {
        let f = l7_flows(&sandbox);
        // The last proxied request's response (ops, POST /anything) is in: all are.
        f.iter()
            .any(|f| {
                f["l7"]["type"] == "RESPONSE"
                    && str_of(&f["l7"]["http"]["url"]).ends_with("/anything")
                    && f["destination"]["pod_name"] == "ops-toolbox"
            })
            .then_some(f)
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
    let ok = find("RESPONSE", "GET", "/metrics", "monitoring");
    assert_eq!(ok["l7"]["http"]["code"], 200);
    assert_eq!(ok["traffic_direction"], "INGRESS");
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
    // ops' requests went through the proxy: L7 flows, FORWARDED, the server's answer.
    let ops_post = find("REQUEST", "POST", "/anything", "ops");
    assert_eq!(ops_post["verdict"], "FORWARDED", "{ops_post}");
    assert_eq!(ops_post["source"]["pod_name"], "ops-toolbox");
    assert_eq!(ops_post["traffic_direction"], "INGRESS");
    let ops_reply = find("RESPONSE", "POST", "/anything", "ops");
    assert_eq!(ops_reply["verdict"], "FORWARDED", "{ops_reply}");
    assert_eq!(ops_reply["l7"]["http"]["code"], 501);
    assert_eq!(
        find("RESPONSE", "GET", "/admin/users", "ops")["l7"]["http"]["code"],
        200
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
    assert!(
        text.lines()
            .any(|l| l.starts_with("hubble_http_requests_total{")
                && l.contains("method=\"POST\"")
                && l.contains("status=\"501\"")
                && l.contains("source_namespace=\"ops\"")),
        "ops' requests are counted:\n{text}"
    );
    sandbox.down_and_check();
}
