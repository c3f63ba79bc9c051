//! End to end: an egress HTTP rule enforced through the datapath redirect. The pod
//! program sends the client's connections to a port with `rules.http` to node-1's L7
//! proxy (DNAT to the node IP on `http_proxy_port`, the original destination kept in
//! `porin_proxy_redir`); the proxy reads the original destination from that map, lets
//! `GET /allowed*` through to the server on node-2 and answers everything else with
//! Cilium's 403. The client never addresses the proxy: it talks to the server's pod IP.
//! The server has both files, so a 403 can only come from the proxy.

mod common;

use std::time::Duration;

use common::{TestSandbox, str_of, wait_for};
use serde_json::Value;

fn pods(www: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: shop}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: tools}}
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  labels: {{app: web}}
spec:
  nodeName: node-2
  containers:
    - name: web
      image: ignored
      command: ["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0", "--directory", "{www}"]
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: tools
  labels: {{app: client}}
spec:
  nodeName: node-1
  containers:
    - name: client
      image: ignored
      command: ["sleep", "infinity"]
"#
    )
}

const CLIENT_HTTP_EGRESS: &str = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: client-http-egress
  namespace: tools
spec:
  endpointSelector:
    matchLabels:
      app: client
  egress:
    - toEndpoints:
        - matchLabels:
            app: web
            k8s:io.kubernetes.pod.namespace: shop
      toPorts:
        - ports:
            - port: "8080"
              protocol: TCP
          rules:
            http:
              - method: GET
                path: "/allowed.*"
"#;

const AGENT_CONFIG: &str = r#"[plugins.policy]
enabled = true

[plugins.policy.l7_proxy]
"#;

/// `curl -X METHOD url` from the client: the status code and the body.
fn curl(sandbox: &TestSandbox, method: &str, url: &str) -> (u16, String) {
    let out = sandbox.exec(
        "tools/client",
        &[
            "curl",
            "-s",
            "-m",
            "5",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
            url,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

#[test]
fn egress_http_rules_are_enforced_through_the_redirect() {
    common::assert_root();
    let www = tempfile::tempdir().expect("www");
    std::fs::write(www.path().join("allowed.txt"), "welcome\n").expect("allowed file");
    std::fs::write(www.path().join("secret.txt"), "the secret\n").expect("secret file");
    let sandbox = TestSandbox::up_with(
        &[
            ("00-pods.yaml", &pods(&www.path().display().to_string())),
            ("10-client-http-egress.yaml", CLIENT_HTTP_EGRESS),
        ],
        Some(AGENT_CONFIG),
    );
    let web = str_of(&sandbox.endpoint("shop/web")["endpoint"]["ipv4"]).to_string();
    let allowed = format!("http://{web}:8080/allowed.txt");
    let got = wait_for(Duration::from_secs(15), || {
        let r = curl(&sandbox, "GET", &allowed);
        (r.0 == 200).then_some(r)
    })
    .unwrap_or_else(|| {
        panic!(
            "GET /allowed.txt never passed: {:?}\n{}",
            curl(&sandbox, "GET", &allowed),
            sandbox.agent_logs()
        )
    });
    assert_eq!(got.1, "welcome\n");
    let secret = format!("http://{web}:8080/secret.txt");
    assert_eq!(
        curl(&sandbox, "GET", &secret),
        (403, "Access denied\r\n".to_owned()),
        "another path is refused by the proxy"
    );
    assert_eq!(
        curl(&sandbox, "POST", &allowed),
        (403, "Access denied\r\n".to_owned()),
        "another method is refused by the proxy"
    );

    // The proxy's L7 flows: egress, the client as source, the server as destination.
    let flows = wait_for(Duration::from_secs(10), || {
        let out = sandbox.porin(&["observe", "--type", "l7", "--last", "100", "-o", "json"]);
        let flows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|r| r["flow"].clone())
            .collect();
        (flows.iter().any(|f| f["verdict"] == "DROPPED")
            && flows.iter().any(|f| f["verdict"] == "FORWARDED"))
        .then_some(flows)
    })
    .unwrap_or_else(|| panic!("no L7 flows of both verdicts\n{}", sandbox.agent_logs()));
    let request = flows
        .iter()
        .find(|f| {
            f["l7"]["http"]["url"]
                .as_str()
                .is_some_and(|u| u.contains("/secret.txt"))
        })
        .unwrap_or_else(|| panic!("no flow of GET /secret.txt: {flows:#?}"));
    assert_eq!(request["source"]["pod_name"], "client", "{request:#}");
    assert_eq!(request["destination"]["pod_name"], "web", "{request:#}");
    sandbox.down_and_check();
}
