//! End to end: dual stack (`porin sandbox up --ipv6`, `[agent] enable_ipv6`).
//!
//! Pods get an IPv6 address from their node's IPv6 pod CIDR next to their IPv4 one, the
//! agents route the IPv6 pod CIDRs between nodes over the IPv6 underlay, and the IPv6
//! addresses are in the ipcache and endpoint maps with the pods' identities, so policy
//! applies to IPv6 exactly as to IPv4:
//! - an allowed client reaches a server on the other node and on its own node over IPv6;
//! - a client the server's ingress policy does not allow is dropped over IPv6 as over
//!   IPv4 (POLICY_DENIED drops with the IPv6 addresses): enabling IPv6 opens no bypass.

mod common;

use std::time::Duration;

use common::{TestSandbox, pod_yaml, str_of, wait_for};
use serde_json::Value;

/// A dual-stack server on node-2, an allowed client on each node, a denied one on node-1.
fn pods() -> String {
    let mut out = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n---\n");
    out.push_str(&pod_yaml("prod", "client", "client", "node-1", None));
    out.push_str(&pod_yaml("prod", "neighbour", "client", "node-2", None));
    out.push_str(&pod_yaml("prod", "intruder", "intruder", "node-1", None));
    // `--bind ::` makes http.server listen on both families (IPV6_V6ONLY off).
    out.push_str(&pod_yaml(
        "prod",
        "server",
        "server",
        "node-2",
        Some(r#"["python3", "-m", "http.server", "8080", "--bind", "::"]"#),
    ));
    out
}

const POLICY: &str = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: server-ingress, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
    - fromEndpoints: [{matchLabels: {app: client}}]
      toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
"#;

/// curl's exit code from `curl: (N) ...` (`porin sandbox exec` does not pass it through):
/// 0 answered, 28 timed out (a policy drop), -1 anything else.
fn curl(sandbox: &TestSandbox, pod: &str, url: &str) -> i32 {
    let out = sandbox.exec(
        pod,
        &["curl", "-sS", "-g", "-o", "/dev/null", "-m", "2", url],
    );
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

/// Waits until `pod` fetching `url` gives `code`; panics naming the case otherwise.
fn expect(sandbox: &TestSandbox, what: &str, pod: &str, url: &str, code: i32) {
    let mut last = -1;
    let ok = wait_for(Duration::from_secs(20), || {
        last = curl(sandbox, pod, url);
        (last == code).then_some(())
    });
    assert!(
        ok.is_some(),
        "{what}: curl {url} from {pod} exited {last}, expected {code}\nagent logs:\n{}",
        sandbox.agent_logs()
    );
}

fn ipv6_of(sandbox: &TestSandbox, pod: &str) -> String {
    let endpoint = sandbox.endpoint(pod);
    let ip = str_of(&endpoint["endpoint"]["ipv6"]).to_string();
    assert!(!ip.is_empty(), "{pod} has no IPv6 address: {endpoint}");
    ip
}

#[test]
fn dual_stack_pods_talk_over_ipv6_and_policy_applies_to_it() {
    let sandbox = TestSandbox::up_with_args(
        &[("10-pods.yaml", &pods()), ("50-policy.yaml", POLICY)],
        Some("[plugins.policy]\nenabled = true\n"),
        2,
        &["--ipv6"],
    );
    let server_v6 = ipv6_of(&sandbox, "prod/server");
    assert!(server_v6.starts_with("fd00:10:2::"), "{server_v6}");
    let client_v6 = ipv6_of(&sandbox, "prod/client");
    assert!(client_v6.starts_with("fd00:10:1::"), "{client_v6}");
    let server_v4 = str_of(&sandbox.endpoint("prod/server")["endpoint"]["ipv4"]).to_string();
    // The pod's own interface carries the address the agent reports.
    let addrs = sandbox.exec("prod/server", &["ip", "-6", "addr", "show", "dev", "eth0"]);
    assert!(
        String::from_utf8_lossy(&addrs.stdout).contains(&format!("{server_v6}/128")),
        "{}",
        String::from_utf8_lossy(&addrs.stdout)
    );

    // `porin endpoint list` gets an IPv6 column with dual stack.
    let table = sandbox.porin(&["endpoint", "list"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.lines().next().is_some_and(|h| h.contains("IPv6")) && table.contains(&server_v6),
        "{table}"
    );

    let url_v6 = format!("http://[{server_v6}]:8080/");
    let url_v4 = format!("http://{server_v4}:8080/");
    expect(
        &sandbox,
        "allowed, other node, IPv6",
        "prod/client",
        &url_v6,
        0,
    );
    expect(
        &sandbox,
        "allowed, same node, IPv6",
        "prod/neighbour",
        &url_v6,
        0,
    );
    expect(
        &sandbox,
        "allowed, other node, IPv4",
        "prod/client",
        &url_v4,
        0,
    );
    expect(&sandbox, "denied, IPv4", "prod/intruder", &url_v4, 28);
    expect(&sandbox, "denied, IPv6", "prod/intruder", &url_v6, 28);

    // The drop is a policy drop of the IPv6 connection, with the IPv6 identities resolved.
    let intruder_v6 = ipv6_of(&sandbox, "prod/intruder");
    let drop = wait_for(Duration::from_secs(10), || {
        sandbox.flows(500).into_iter().find(|f: &Value| {
            f["verdict"] == "DROPPED"
                && f["drop_reason_desc"] == "POLICY_DENIED"
                && f["IP"]["destination"] == server_v6.as_str()
        })
    })
    .unwrap_or_else(|| panic!("no POLICY_DENIED drop to {server_v6}"));
    assert_eq!(drop["IP"]["source"], intruder_v6.as_str(), "{drop}");
    assert_eq!(drop["IP"]["ipVersion"], "IPv6", "{drop}");
    assert_eq!(drop["source"]["pod_name"], "intruder", "{drop}");
    assert_eq!(drop["destination"]["pod_name"], "server", "{drop}");
    sandbox.down_and_check();
}
