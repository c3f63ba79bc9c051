//! End to end: IPv6 ClusterIPs with socket-level load balancing (dual stack,
//! `porin sandbox up --ipv6`). Dual-stack Services (`ipFamilies: [IPv4, IPv6]`,
//! `clusterIPs`) are reached over IPv6 from pods on both nodes; the `connect6`/`sendmsg6`
//! hooks send them to local and remote backends, `getpeername6`/`recvmsg6` give the
//! applications the service address back, UDP works unconnected and connected, a service
//! without backends refuses connect() at once, a `sessionAffinity: ClientIP` Service keeps
//! a client on one backend, and `porin service list` shows the IPv6 frontends (with their
//! affinity) and `cilium_bpf_map_pressure` covers the IPv6 maps, also after a killed agent
//! restarted. With `socket_lb = false` and `algorithm = "maglev"` the pod programs serve the
//! same Services per packet (DNAT, reverse NAT, the refusal as an ICMPv6 port unreachable,
//! new connections spread over both backends by the IPv6 Maglev tables, affinity first).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::socket_probe::{PROBE, assert_client_packets_go_to_backends};
use common::{TestSandbox, metric_value, str_of};

const VIP6: &str = "fd00:96::70";
const UDP_VIP6: &str = "fd00:96::71";
const EMPTY_VIP6: &str = "fd00:96::72";
const STICKY_VIP6: &str = "fd00:96::73";

/// A UDP echo server on both families (IPV6_V6ONLY off).
const UDP_ECHO: &str = r#"
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", 5353))
while True:
    data, addr = s.recvfrom(2048)
    s.sendto(data, addr)
"#;

fn manifests(dir: &Path) -> String {
    let root = dir.display();
    let pod = |name: &str, node: &str, app: &str, command: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {{app: {app}}}}}\n\
             spec:\n  nodeName: {node}\n  containers: [{{name: main, image: ignored, command: {command}}}]\n---\n"
        )
    };
    let http = |name: &str| {
        format!(
            r#"["python3", "-m", "http.server", "8080", "--bind", "::", "--directory", "{root}/{name}"]"#
        )
    };
    let service = |name: &str, v4: &str, v6: &str, app: &str, port: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\n\
             spec:\n  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]\n  \
             clusterIP: {v4}\n  clusterIPs: [{v4}, \"{v6}\"]\n  selector: {{app: {app}}}\n  \
             ports: [{port}]\n---\n"
        )
    };
    let mut out = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n");
    out.push_str(&pod("web-1", "node-1", "web", &http("web-1")));
    out.push_str(&pod("web-2", "node-2", "web", &http("web-2")));
    out.push_str(&pod(
        "echo-1",
        "node-2",
        "echo",
        &format!(r#"["python3", "{root}/udp_echo.py"]"#),
    ));
    out.push_str(&pod(
        "client-1",
        "node-1",
        "client",
        r#"["sleep", "infinity"]"#,
    ));
    out.push_str(&pod(
        "client-2",
        "node-2",
        "client",
        r#"["sleep", "infinity"]"#,
    ));
    out.push_str(&service(
        "web",
        "10.96.0.70",
        VIP6,
        "web",
        "{port: 80, targetPort: 8080}",
    ));
    out.push_str(&service(
        "echo",
        "10.96.0.71",
        UDP_VIP6,
        "echo",
        "{port: 53, protocol: UDP, targetPort: 5353}",
    ));
    // The same backends with `sessionAffinity: ClientIP`.
    out.push_str(
        &service(
            "sticky",
            "10.96.0.73",
            STICKY_VIP6,
            "web",
            "{port: 80, targetPort: 8080}",
        )
        .replace("  selector:", "  sessionAffinity: ClientIP\n  selector:"),
    );
    out.push_str(&service(
        "nobody",
        "10.96.0.72",
        EMPTY_VIP6,
        "nobody-has-this",
        "{port: 80, targetPort: 8080}",
    ));
    out
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

fn probe(sandbox: &TestSandbox, pod: &str, dir: &Path, args: &[&str]) -> String {
    let script = dir.join("probe.py").display().to_string();
    let mut cmd = vec!["python3", script.as_str()];
    cmd.extend_from_slice(args);
    let out = sandbox.exec(pod, &cmd);
    assert!(
        out.status.success(),
        "probe {args:?} from {pod} failed: {}\nagent logs:\n{}",
        String::from_utf8_lossy(&out.stderr),
        sandbox.agent_logs()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A sandbox with the Services, `lb_config` in every agent's configuration.
fn up(dir: &Path, lb_config: &str) -> TestSandbox {
    TestSandbox::up_with_args(
        &[("00-shop.yaml", &manifests(dir))],
        Some(lb_config),
        2,
        &["--ipv6"],
    )
}

/// Waits (condition-based, up to 20 s) until the IPv6 service at `vip`:80 answers `client`.
fn wait_for_answer(sandbox: &TestSandbox, client: &str, vip: &str) {
    let url = format!("http://[{vip}]/");
    let first = sandbox.exec_until_ok(
        client,
        &["curl", "-g", "-s", "-m", "2", &url],
        Duration::from_secs(20),
    );
    assert!(
        first.status.success(),
        "the IPv6 service {vip} never answered {client}: {}\nagent logs:\n{}",
        String::from_utf8_lossy(&first.stderr),
        sandbox.agent_logs()
    );
}

/// The row of `frontend` in one node's `porin service list`.
fn service_row(node: &serde_json::Value, frontend: &str) -> serde_json::Value {
    node["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| str_of(&s["frontend"]) == frontend)
        .cloned()
        .unwrap_or_else(|| panic!("no {frontend} in porin service list: {node}"))
}

/// From both clients (node-1 and node-2): the IPv6 service answers, every connection sees
/// the VIP as its peer, and the local and the remote backend both serve.
fn check_tcp_from_both_nodes(sandbox: &TestSandbox, dir: &Path) {
    for client in ["shop/client-1", "shop/client-2"] {
        wait_for_answer(sandbox, client, VIP6);
        let mut bodies = BTreeSet::new();
        for _ in 0..16 {
            let line = probe(sandbox, client, dir, &["tcp", VIP6, "80"]);
            assert!(
                line.starts_with(&format!("peer=[{VIP6}]:80 ")),
                "getpeername did not return the IPv6 service address to {client}: {line}"
            );
            bodies.insert(line.rsplit("body=").next().unwrap_or_default().to_string());
        }
        assert_eq!(
            bodies,
            BTreeSet::from(["web-1".to_string(), "web-2".to_string()]),
            "{client}: the local and the remote backend serve the IPv6 service"
        );
    }
}

/// `sessionAffinity: ClientIP` over IPv6: every new connection of `client` reaches the
/// same backend (of two; 16 connections), and `porin service list` shows the affinity.
fn check_sticky(sandbox: &TestSandbox, dir: &Path, client: &str) {
    wait_for_answer(sandbox, client, STICKY_VIP6);
    let bodies: BTreeSet<String> = (0..16)
        .map(|_| {
            let line = probe(sandbox, client, dir, &["tcp", STICKY_VIP6, "80"]);
            line.rsplit("body=").next().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(
        bodies.len(),
        1,
        "{client}: connections to the ClientIP-affinity IPv6 service reached {bodies:?}\nagent logs:\n{}",
        sandbox.agent_logs()
    );
    let list = sandbox.porin_json(&["service", "list"]);
    let frontend = format!("[{STICKY_VIP6}]:80");
    for node in list.as_array().into_iter().flatten() {
        let row = service_row(node, &frontend);
        assert_eq!(str_of(&row["affinity"]["type"]), "ClientIP", "{row}");
        assert_eq!(row["affinity"]["timeout_seconds"], 10800, "{row}");
    }
}

/// UDP over IPv6 from `client`, unconnected and connected: replies come from the VIP.
fn check_udp(sandbox: &TestSandbox, dir: &Path, client: &str) {
    let echo = sandbox.exec_until_ok(
        client,
        &[
            "python3",
            &dir.join("probe.py").display().to_string(),
            "udp",
            UDP_VIP6,
            "53",
        ],
        Duration::from_secs(20),
    );
    let line = String::from_utf8_lossy(&echo.stdout).trim().to_string();
    assert_eq!(
        line,
        format!(
            "from=[{UDP_VIP6}]:53 data=ping connected_peer=[{UDP_VIP6}]:53 connected_data=pong"
        ),
        "UDP through the IPv6 service from {client}: {}\nagent logs:\n{}",
        String::from_utf8_lossy(&echo.stderr),
        sandbox.agent_logs()
    );
}

/// connect() to the IPv6 frontend without backends fails at once with ECONNREFUSED.
fn check_refused(sandbox: &TestSandbox, dir: &Path) {
    let started = Instant::now();
    let line = probe(
        sandbox,
        "shop/client-1",
        dir,
        &["refused", EMPTY_VIP6, "80"],
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the refusal took {:?}",
        started.elapsed()
    );
    assert!(
        line.starts_with(&format!("errno={} ", libc::ECONNREFUSED)),
        "expected ECONNREFUSED: {line}"
    );
}

#[test]
fn ipv6_cluster_ips_are_served_by_the_socket_hooks_from_both_nodes() {
    let dir = files();
    let sandbox = up(dir.path(), "[plugins.lb]\nenabled = true\n");
    check_tcp_from_both_nodes(&sandbox, dir.path());

    // On the wire the client's packets already carry an IPv6 backend address.
    assert_client_packets_go_to_backends(
        &sandbox,
        "client-1",
        &["shop/web-1", "shop/web-2"],
        "ipv6",
        VIP6,
    );

    // UDP over IPv6, unconnected (sendmsg6/recvmsg6) and connected (connect6/getpeername6).
    check_udp(&sandbox, dir.path(), "shop/client-1");

    // sessionAffinity: ClientIP at connect6 (the client is its pod's netns).
    check_sticky(&sandbox, dir.path(), "shop/client-2");

    // No backends: connect() to the IPv6 frontend is refused by the hook, at once.
    check_refused(&sandbox, dir.path());

    // `porin service list` shows the IPv6 frontends with their backends, on every node.
    let list = sandbox.porin_json(&["service", "list"]);
    let frontend = format!("[{VIP6}]:80");
    let nodes = list.as_array().cloned().unwrap_or_default();
    assert_eq!(nodes.len(), 2, "{list}");
    for node in &nodes {
        let row = service_row(node, &frontend);
        assert_eq!(row["backends"].as_array().map(Vec::len), Some(2), "{row}");
    }

    // Map pressure of the IPv6 maps (default sizes): 4 frontends, 5 slots (web 2, echo 1,
    // sticky 2, nobody 0) and 3 distinct backends.
    let metrics = sandbox.metrics("node-1");
    for (map, used, max) in [
        ("porin_lb_svc6", 4.0, 262_144.0),
        ("porin_lb_slots6", 5.0, 1_048_576.0),
        ("porin_lb_backends6", 3.0, 262_144.0),
    ] {
        let name = format!("map_name=\"{map}\"");
        let pressure = metric_value(&metrics, "cilium_bpf_map_pressure", &[&name]);
        assert!(
            pressure.is_some_and(|p| (p - used / max).abs() < 1e-12),
            "{map} pressure {pressure:?}, expected {used}/{max}"
        );
    }

    // A killed and restarted agent adopts its IPv6 frontends: they keep serving.
    let out = sandbox.porin(&["sandbox", "restart-agent", "node-1", "--kill"]);
    assert!(
        out.status.success(),
        "restart failed: {}\nagent logs:\n{}",
        String::from_utf8_lossy(&out.stderr),
        sandbox.agent_logs()
    );
    check_tcp_from_both_nodes(&sandbox, dir.path());
    sandbox.down_and_check();
}

#[test]
fn ipv6_cluster_ips_are_served_per_packet_with_socket_lb_off() {
    let dir = files();
    // With Maglev: new connections (new source ports) hash to both backends' slots of the
    // IPv6 frontends' tables.
    let sandbox = up(
        dir.path(),
        "[plugins.lb]\nenabled = true\nsocket_lb = false\nalgorithm = \"maglev\"\n",
    );
    check_tcp_from_both_nodes(&sandbox, dir.path());
    // Per packet, the client's packets leave it with the VIP (DNAT happens after the
    // from-endpoint observation point), and the reverse NAT gives UDP replies the VIP.
    let flows = sandbox.flows(1000);
    assert!(
        flows.iter().any(|f| {
            str_of(&f["source"]["pod_name"]) == "client-1"
                && str_of(&f["trace_observation_point"]) == "FROM_ENDPOINT"
                && str_of(&f["IP"]["destination"]) == VIP6
        }),
        "no client-1 -> VIP flow at from-endpoint (socket LB instead of per-packet?)"
    );
    check_udp(&sandbox, dir.path(), "shop/client-2");
    // sessionAffinity: ClientIP per packet (the client is its IPv6 address).
    check_sticky(&sandbox, dir.path(), "shop/client-1");
    // Per packet, the refusal is an ICMPv6 port unreachable from the VIP.
    check_refused(&sandbox, dir.path());
    sandbox.down_and_check();
}
