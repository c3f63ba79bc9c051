//! End to end: socket-level load balancing (the lb plugin's cgroup hooks, `socket_lb = true`,
//! the default). A client pod's connect() to a ClusterIP is translated before any packet
//! leaves: its packets already carry the backend address on the wire, while getpeername()
//! and recvfrom() show the service address. UDP to a service works, a service without
//! backends refuses connect() at once, and the pinned hooks keep working across a killed and
//! restarted agent (their links are reused, not re-created).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::socket_probe::{PROBE, assert_client_packets_go_to_backends};
use common::{TestSandbox, str_of};

const VIP: &str = "10.96.0.60";
const UDP_VIP: &str = "10.96.0.61";
const EMPTY_VIP: &str = "10.96.0.62";

/// A UDP echo server: replies to every datagram with its payload, from the port it got it on.
const UDP_ECHO: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
while True:
    data, addr = s.recvfrom(2048)
    s.sendto(data, addr)
"#;

fn manifests(dir: &Path) -> String {
    let root = dir.display();
    let pod = |name: &str, node: &str, app: &str, command: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: shop
  labels:
    app: {app}
spec:
  nodeName: {node}
  containers:
    - name: main
      image: ignored
      command: {command}
---
"#
        )
    };
    let http = |name: &str| {
        format!(
            r#"["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0", "--directory", "{root}/{name}"]"#
        )
    };
    let echo = format!(r#"["python3", "{root}/udp_echo.py"]"#);
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
{web1}{web2}{udp}{client}apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  clusterIP: {VIP}
  selector:
    app: web
  ports:
    - port: 80
      targetPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: shop
spec:
  clusterIP: {UDP_VIP}
  selector:
    app: echo
  ports:
    - port: 53
      protocol: UDP
      targetPort: 5353
---
apiVersion: v1
kind: Service
metadata:
  name: nobody
  namespace: shop
spec:
  clusterIP: {EMPTY_VIP}
  selector:
    app: nobody-has-this
  ports:
    - port: 80
      targetPort: 8080
"#,
        web1 = pod("web-1", "node-1", "web", &http("web-1")),
        web2 = pod("web-2", "node-2", "web", &http("web-2")),
        udp = pod("echo-1", "node-2", "echo", &echo),
        client = pod("client", "node-1", "client", r#"["sleep", "infinity"]"#),
    )
}

fn files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("files dir");
    for name in ["web-1", "web-2"] {
        std::fs::create_dir(dir.path().join(name)).expect("mkdir");
        std::fs::write(dir.path().join(name).join("index.html"), name).expect("index.html");
    }
    std::fs::write(dir.path().join("udp_echo.py"), UDP_ECHO).expect("udp_echo.py");
    std::fs::write(dir.path().join("probe.py"), PROBE).expect("probe.py");
    dir
}

fn probe(sandbox: &TestSandbox, dir: &Path, args: &[&str]) -> String {
    let script = dir.join("probe.py").display().to_string();
    let mut cmd = vec!["python3", script.as_str()];
    cmd.extend_from_slice(args);
    let out = sandbox.exec("shop/client", &cmd);
    assert!(
        out.status.success(),
        "probe {args:?} failed: {}\nagent logs:\n{}",
        String::from_utf8_lossy(&out.stderr),
        sandbox.agent_logs()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Connects to the VIP a few times: every connection sees the VIP as its peer, and together
/// they reach both backends (node-1 local, node-2 remote).
fn check_tcp(sandbox: &TestSandbox, dir: &Path) {
    let mut bodies = BTreeSet::new();
    for _ in 0..24 {
        let line = probe(sandbox, dir, &["tcp", VIP, "80"]);
        assert!(
            line.starts_with(&format!("peer={VIP}:80 ")),
            "getpeername did not return the service address: {line}"
        );
        bodies.insert(line.rsplit("body=").next().unwrap_or_default().to_string());
    }
    assert_eq!(
        bodies,
        BTreeSet::from(["web-1".to_string(), "web-2".to_string()]),
        "both backends serve the service"
    );
}

/// The id of the bpf_link pinned at `path`.
fn pinned_link_id(path: &Path) -> u64 {
    let out = Command::new("bpftool")
        .args(["-j", "link", "show", "pinned"])
        .arg(path)
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool link show pinned {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
    v["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no link id in {v}"))
}

#[test]
fn socket_lb_translates_at_connect_and_survives_a_restart() {
    let dir = files();
    let sandbox = TestSandbox::up_with(
        &[("00-shop.yaml", &manifests(dir.path()))],
        Some("[plugins.lb]\nenabled = true\n"),
    );
    let first = sandbox.exec_until_ok(
        "shop/client",
        &["curl", "-s", "-m", "2", &format!("http://{VIP}/")],
        Duration::from_secs(20),
    );
    assert!(
        first.status.success(),
        "the service never answered: {}\nagent logs:\n{}",
        String::from_utf8_lossy(&first.stderr),
        sandbox.agent_logs()
    );

    // TCP: the application sees the VIP...
    check_tcp(&sandbox, dir.path());

    // ...but on the wire, leaving the client, the packets already go to a backend.
    assert_client_packets_go_to_backends(
        &sandbox,
        "client",
        &["shop/web-1", "shop/web-2"],
        "ipv4",
        VIP,
    );

    // UDP, unconnected (sendmsg/recvmsg) and connected (connect/getpeername).
    let echo = sandbox.exec_until_ok(
        "shop/client",
        &[
            "python3",
            &dir.path().join("probe.py").display().to_string(),
            "udp",
            UDP_VIP,
            "53",
        ],
        Duration::from_secs(20),
    );
    let line = String::from_utf8_lossy(&echo.stdout).trim().to_string();
    assert_eq!(
        line,
        format!("from={UDP_VIP}:53 data=ping connected_peer={UDP_VIP}:53 connected_data=pong"),
        "UDP through the service: {}\nagent logs:\n{}",
        String::from_utf8_lossy(&echo.stderr),
        sandbox.agent_logs()
    );

    // No backends: connect() is refused by the hook itself, at once.
    let started = Instant::now();
    let line = probe(&sandbox, dir.path(), &["refused", EMPTY_VIP, "80"]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the refusal took {:?}",
        started.elapsed()
    );
    let errno = libc::ECONNREFUSED;
    assert!(
        line.starts_with(&format!("errno={errno} ")),
        "expected ECONNREFUSED: {line}"
    );
    let ms: u64 = line
        .rsplit("ms=")
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(ms < 100, "connect() waited {ms} ms before the refusal");

    // A killed agent: the pinned links keep the hooks in place, and the new agent swaps its
    // programs into the same links.
    let status = sandbox.porin_json(&["status", "--node", "node-1"]);
    let pins = std::path::PathBuf::from(str_of(&status[0]["datapath"]["pin_dir"]));
    let link = pins.join("links").join("cgroup-connect4");
    let before = pinned_link_id(&link);
    let out = sandbox.porin(&["sandbox", "restart-agent", "node-1", "--kill"]);
    assert!(
        out.status.success(),
        "restart failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        sandbox.agent_logs()
    );
    assert_eq!(
        pinned_link_id(&link),
        before,
        "the connect4 link was re-created; agent logs:\n{}",
        sandbox.agent_logs()
    );
    check_tcp(&sandbox, dir.path());
    let line = probe(&sandbox, dir.path(), &["refused", EMPTY_VIP, "80"]);
    assert!(
        line.starts_with(&format!("errno={errno} ")),
        "after restart: {line}"
    );

    sandbox.down_and_check();
}
