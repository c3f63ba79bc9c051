//! End to end: a NodePort Service served to a client outside the cluster (the sandbox's
//! external namespace on the underlay) by `bpf/host.c` on each node's `ul0`. Backends on
//! node-1 and node-2: through either node's address the client reaches both (the local one by
//! DNAT, the remote one by DNAT + SNAT through the node), a port that is not a NodePort is not
//! answered, the backend's flows show the traffic, a NodePort without backends refuses at
//! once (a TCP RST from the frontend, no timeout), and an agent restart keeps the pinned
//! device link (its program replaced atomically) with NodePort still served.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{TestSandbox, str_of};

const NODE_PORT: u16 = 30080;
const EMPTY_NODE_PORT: u16 = 30099;
const NODE_1: &str = "192.168.200.1";
const NODE_2: &str = "192.168.200.2";

fn manifests(www: &std::path::Path) -> String {
    let backend = |name: &str, node: &str| common::named_backend_pod(www, name, node);
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
{web1}{web2}apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  type: NodePort
  clusterIP: 10.96.0.60
  selector:
    app: web
  ports:
    - name: http
      port: 80
      targetPort: http
      nodePort: {NODE_PORT}
---
apiVersion: v1
kind: Service
metadata:
  name: nobody
  namespace: shop
spec:
  type: NodePort
  clusterIP: 10.96.0.61
  selector:
    app: nobody-has-this
  ports:
    - port: 80
      targetPort: 8080
      nodePort: {EMPTY_NODE_PORT}
"#,
        web1 = backend("web-1", "node-1"),
        web2 = backend("web-2", "node-2"),
    )
}

fn external_curl(sandbox: &TestSandbox, url: &str, timeout_s: &str) -> std::process::Output {
    sandbox.porin(&[
        "sandbox",
        "exec",
        "--external",
        "--",
        "curl",
        "-sS",
        "-m",
        timeout_s,
        url,
    ])
}

#[test]
fn node_port_reaches_local_and_remote_backends_from_outside_the_cluster() {
    let www = common::document_roots(&["web-1", "web-2"]);
    let sandbox = TestSandbox::up_with(
        &[("00-shop.yaml", &manifests(www.path()))],
        Some("[plugins.lb]\nenabled = true\n"),
    );

    // The node device program is attached and pinned like the pod links.
    let status = sandbox.porin_json(&["status", "--node", "node-1"]);
    let links = std::path::PathBuf::from(str_of(&status[0]["datapath"]["pin_dir"])).join("links");
    assert!(
        links.join("netdev-ul0-ingress").exists(),
        "no node device link pinned in {}\nagent logs:\n{}",
        links.display(),
        sandbox.agent_logs()
    );

    for node in [NODE_1, NODE_2] {
        let url = format!("http://{node}:{NODE_PORT}/");
        // Backends start asynchronously: wait until both have answered once (a backend
        // whose server is not listening yet refuses, which is not what is tested here).
        let warm = common::warm_up(Duration::from_secs(20), 2, || {
            let out = external_curl(&sandbox, &url, "2");
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        });
        assert_eq!(
            warm.len(),
            2,
            "{url}: not both backends answered the external client ({warm:?})\nagent logs:\n{}",
            sandbox.agent_logs()
        );

        let mut seen = BTreeSet::new();
        for i in 0..30 {
            let out = external_curl(&sandbox, &url, "3");
            assert!(
                out.status.success(),
                "request {i} to {url} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            seen.insert(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        assert_eq!(
            seen,
            BTreeSet::from(["web-1".to_string(), "web-2".to_string()]),
            "through {node}: both backends (local and remote) serve the NodePort"
        );
    }

    // A NodePort without backends (programmed: listed with its frontend) refuses at once.
    let empty = (format!("0.0.0.0:{EMPTY_NODE_PORT}"), "NodePort".to_string());
    let listed = common::wait_for(Duration::from_secs(10), || {
        common::service_kinds(&sandbox, "node-1")
            .contains(&empty)
            .then_some(())
    });
    assert!(
        listed.is_some(),
        "{empty:?} not in {:?}",
        common::service_kinds(&sandbox, "node-1")
    );
    common::socket_probe::assert_node_port_refuses_at_once(
        &sandbox,
        www.path(),
        "node-1",
        NODE_1,
        EMPTY_NODE_PORT,
    );

    // Flows at the backends: the local backend sees the external client itself, the remote
    // one sees the node that SNATed the connection.
    // Events reach the flow ring asynchronously: wait for them under load.
    let seen = |pod: &str, src: &str| {
        common::wait_for(Duration::from_secs(10), || {
            sandbox
                .flows(2000)
                .iter()
                .any(|f| {
                    str_of(&f["destination"]["pod_name"]) == pod
                        && str_of(&f["IP"]["source"]) == src
                        && f["l4"]["TCP"]["destination_port"] == 8080
                })
                .then_some(())
        })
        .is_some()
    };
    assert!(
        seen("web-1", "192.168.200.250"),
        "no external client -> web-1 flow (local backend through node-1); flows to web-1: {:#?}",
        sandbox
            .flows(2000)
            .iter()
            .filter(|f| str_of(&f["destination"]["pod_name"]) == "web-1"
                || str_of(&f["source"]["pod_name"]) == "web-1")
            .map(|f| format!(
                "{} {} {}:{} -> {}:{} {:?} reply={} {}",
                str_of(&f["node_name"]),
                str_of(&f["trace_observation_point"]),
                str_of(&f["IP"]["source"]),
                f["l4"]["TCP"]["source_port"],
                str_of(&f["IP"]["destination"]),
                f["l4"]["TCP"]["destination_port"],
                f["l4"]["TCP"]["flags"],
                f["is_reply"],
                str_of(&f["verdict"])
            ))
            .take(12)
            .collect::<Vec<_>>()
    );
    assert!(
        seen("web-2", NODE_1),
        "no node-1 -> web-2 flow (remote backend, SNATed by node-1)"
    );

    // Checked after the flows: a restarted agent starts with an empty flow ring.
    // An agent restart replaces the program of the pinned device link; NodePort keeps working.
    let link_id = || {
        let out = std::process::Command::new("bpftool")
            .args(["link", "show", "pinned"])
            .arg(links.join("netdev-ul0-ingress"))
            .output()
            .expect("bpftool");
        String::from_utf8_lossy(&out.stdout)
            .split(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let before = link_id();
    let restarted = sandbox.porin(&["sandbox", "restart-agent", "node-1"]);
    assert!(
        restarted.status.success(),
        "restart-agent failed: {}\nagent logs:\n{}",
        String::from_utf8_lossy(&restarted.stderr),
        sandbox.agent_logs()
    );
    assert!(!before.is_empty(), "bpftool found no pinned device link");
    assert_eq!(
        link_id(),
        before,
        "the pinned link is reused, not recreated"
    );
    let out = external_curl(&sandbox, &format!("http://{NODE_1}:{NODE_PORT}/"), "3");
    assert!(
        out.status.success(),
        "NodePort through node-1 after an agent restart: {}\nagent logs:\n{}",
        String::from_utf8_lossy(&out.stderr),
        sandbox.agent_logs()
    );

    // A port that is not a NodePort is not answered (by a backend or anything else).
    let out = external_curl(&sandbox, &format!("http://{NODE_1}:30081/"), "2");
    assert!(
        !out.status.success(),
        "port 30081 answered: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    sandbox.down_and_check();
}
