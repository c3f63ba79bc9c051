//! End to end: CIDR and `world` policy in the datapath, against a real machine outside the
//! cluster (the sandbox's external namespace on the underlay, with a second address).
//!
//! - egress `toCIDRSet` with `except`: the pod reaches 192.168.200.251 but not .250, which
//!   lies in the exception (its own, more specific CIDR identity in the ipcache);
//! - NetworkPolicy ingress `ipBlock` with `except`: the external machine reaches the server
//!   from .251 but not from .250, and a pod of the cluster is not selected by the ipBlock;
//! - egress `toEntities: [world]`: the external machine is world, a pod is not.
//!
//! "Reachable" on a port where nothing listens means the external kernel answered with a
//! RST (curl exit 7, at once); a policy drop means no answer (curl exit 28, timeout).

mod common;

use std::time::Duration;

use common::{TestSandbox, pod_yaml, str_of, wait_for};
use serde_json::Value;

const EXTERNAL: &str = "192.168.200.250";
const EXTERNAL_2: &str = "192.168.200.251";

/// A server on node-2 and three clients on node-1, in namespace `prod`.
fn pods() -> String {
    let mut out = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n---\n");
    for name in ["client", "surfer", "other"] {
        out.push_str(&pod_yaml("prod", name, name, "node-1", None));
    }
    out.push_str(&pod_yaml(
        "prod",
        "server",
        "server",
        "node-2",
        Some(r#"["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0"]"#),
    ));
    out
}

const POLICIES: &str = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client-egress, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
    - toCIDRSet:
        - cidr: 192.168.200.248/29
          except: [192.168.200.250/32]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-ingress, namespace: prod}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
    - from:
        - ipBlock: {cidr: 192.168.200.0/24, except: [192.168.200.250/32]}
        - ipBlock: {cidr: 10.0.0.0/8}
      ports: [{port: 8080, protocol: TCP}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: surfer-egress, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: surfer}}
  egress:
    - toEntities: [world]
"#;

/// curl's error code: 0 answered, 7 refused (a RST came back), 28 timed out. Read from
/// `curl: (N) ...` on stderr: `porin sandbox exec` does not pass the exit code through.
fn curl_code(out: &std::process::Output) -> i32 {
    if out.status.success() {
        return 0;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .split_once("curl: (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .and_then(|(code, _)| code.parse().ok())
        .unwrap_or(-1)
}

fn from_pod(sandbox: &TestSandbox, pod: &str, url: &str) -> i32 {
    curl_code(&sandbox.exec(pod, &["curl", "-sS", "-o", "/dev/null", "-m", "2", url]))
}

fn from_external(sandbox: &TestSandbox, source: &str, url: &str) -> i32 {
    curl_code(&sandbox.exec_external(&[
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-m",
        "2",
        "--interface",
        source,
        url,
    ]))
}

fn external(sandbox: &TestSandbox, cmd: &[&str]) {
    let out = sandbox.exec_external(cmd);
    assert!(
        out.status.success(),
        "external {cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until `probe` returns one of `codes`; panics naming the case otherwise.
fn expect(sandbox: &TestSandbox, what: &str, codes: &[i32], mut probe: impl FnMut() -> i32) {
    let mut last = -1;
    let ok = wait_for(Duration::from_secs(15), || {
        last = probe();
        codes.contains(&last).then_some(())
    });
    assert!(
        ok.is_some(),
        "{what}: curl exit {last}, expected one of {codes:?}\nagent logs:\n{}",
        sandbox.agent_logs()
    );
}

fn policy_drops(sandbox: &TestSandbox) -> Vec<Value> {
    sandbox
        .flows(500)
        .into_iter()
        .filter(|f| f["verdict"] == "DROPPED" && f["drop_reason_desc"] == "POLICY_DENIED")
        .collect()
}

#[test]
fn cidr_except_ip_block_and_world_select_addresses_outside_the_cluster() {
    let sandbox = TestSandbox::up_with(
        &[("10-pods.yaml", &pods()), ("50-policies.yaml", POLICIES)],
        Some("[plugins.policy]\nenabled = true\n"),
    );
    // The external machine gets a second address and routes back to the pods.
    external(
        &sandbox,
        &[
            "ip",
            "addr",
            "add",
            &format!("{EXTERNAL_2}/24"),
            "dev",
            "ul0",
        ],
    );
    let state = sandbox.state();
    for node in state["nodes"].as_array().expect("nodes") {
        external(
            &sandbox,
            &[
                "ip",
                "route",
                "add",
                str_of(&node["pod_cidr"]),
                "via",
                str_of(&node["underlay_ip"]),
            ],
        );
    }
    let server = str_of(&sandbox.endpoint("prod/server")["endpoint"]["ipv4"]).to_string();
    let server_url = format!("http://{server}:8080/");
    let closed = |ip: &str| format!("http://{ip}:9/");

    // Egress toCIDRSet with except: .251 answers (RST), .250 is dropped.
    expect(&sandbox, "client -> .251 inside the CIDR", &[7], || {
        from_pod(&sandbox, "prod/client", &closed(EXTERNAL_2))
    });
    expect(&sandbox, "client -> .250 in the except", &[28], || {
        from_pod(&sandbox, "prod/client", &closed(EXTERNAL))
    });
    let drop = wait_for(Duration::from_secs(10), || {
        policy_drops(&sandbox)
            .into_iter()
            .find(|f| f["IP"]["destination"] == EXTERNAL && f["source"]["pod_name"] == "client")
    })
    .unwrap_or_else(|| panic!("no POLICY_DENIED drop to {EXTERNAL}"));
    assert_eq!(drop["traffic_direction"], "EGRESS", "{drop}");

    // Ingress ipBlock with except: from .251 served, from .250 dropped, pods not selected.
    expect(&sandbox, "external .251 -> server", &[0], || {
        from_external(&sandbox, EXTERNAL_2, &server_url)
    });
    expect(&sandbox, "external .250 -> server (except)", &[28], || {
        from_external(&sandbox, EXTERNAL, &server_url)
    });
    expect(
        &sandbox,
        "pod other -> server (ipBlock 10.0.0.0/8 selects no pod)",
        &[28],
        || from_pod(&sandbox, "prod/other", &server_url),
    );

    // toEntities world: the external machine yes, a pod of the cluster no.
    expect(&sandbox, "surfer -> external (world)", &[7], || {
        from_pod(&sandbox, "prod/surfer", &closed(EXTERNAL))
    });
    expect(&sandbox, "surfer -> server (not world)", &[28], || {
        from_pod(&sandbox, "prod/surfer", &server_url)
    });
    sandbox.down_and_check();
}
