//! End to end: IPv6 NodePort, ExternalIPs and LoadBalancer IPs (dual stack, `porin sandbox
//! up --ipv6`) served by `bpf/host.c` (`bpf/lib/nodeport6.h`) on each node's `ul0` to the
//! external client (fd00:ffff::fa on the underlay). A dual-stack LoadBalancer Service with
//! backends on node-1 and node-2: through either node's IPv6 address, its IPv6 external IP
//! and its IPv6 ingress IP (each routed to a node by the client, as a router would) the
//! client reaches both the local backend (DNAT) and the remote one (DNAT + SNAT to the
//! node); with `externalTrafficPolicy: Local` each node sends only to its own backend; a
//! UDP NodePort answers from a remote backend; a NodePort without backends refuses
//! at once; `porin service list` shows the IPv6 frontends with their type.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::TestSandbox;

const NODE_1: &str = "fd00:ffff::1";
const NODE_2: &str = "fd00:ffff::2";
const EXTERNAL_IP: &str = "2001:db8::10";
const INGRESS_IP: &str = "2001:db8::20";
const HTTP_NODE_PORT: u16 = 30090;
const UDP_NODE_PORT: u16 = 30053;
const EMPTY_NODE_PORT: u16 = 30099;
const LOCAL_NODE_PORT: u16 = 30091;
const STICKY_NODE_PORT: u16 = 30092;

/// A UDP echo server on IPv6.
const UDP_ECHO: &str = r#"
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", 5353))
while True:
    data, addr = s.recvfrom(2048)
    s.sendto(data, addr)
"#;

/// One UDP datagram to [argv1]:argv2 and its echo (the external client's side).
const UDP_ASK: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(b"ping6", (sys.argv[1], int(sys.argv[2])))
data, peer = s.recvfrom(2048)
print(data.decode(), peer[0], peer[1])
"#;

fn manifests(dir: &Path) -> String {
    let root = dir.display();
    let pod = |name: &str, node: &str, app: &str, command: &str| {
        common::pod_yaml("shop", name, app, node, Some(command))
    };
    let http = |name: &str| {
        format!(
            r#"["python3", "-m", "http.server", "8080", "--bind", "::", "--directory", "{root}/{name}"]"#
        )
    };
    let dual = |v4: &str, v6: &str| {
        format!(
            "  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]\n  clusterIP: {v4}\n  \
             clusterIPs: [{v4}, \"{v6}\"]\n"
        )
    };
    let mut out = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n");
    out.push_str(&pod("web-1", "node-1", "web", &http("web-1")));
    out.push_str(&pod("web-2", "node-2", "web", &http("web-2")));
    out.push_str(&pod(
        "echo-2",
        "node-2",
        "echo",
        &format!(r#"["python3", "{root}/udp_echo.py"]"#),
    ));
    out.push_str(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\nspec:\n  \
         type: LoadBalancer\n{}  externalIPs: [\"{EXTERNAL_IP}\"]\n  selector: {{app: web}}\n  \
         ports: [{{port: 80, targetPort: 8080, nodePort: {HTTP_NODE_PORT}}}]\n\
         status:\n  loadBalancer:\n    ingress: [{{ip: \"{INGRESS_IP}\"}}]\n---\n",
        dual("10.96.0.90", "fd00:96::90")
    ));
    out.push_str(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: echo, namespace: shop}}\nspec:\n  \
         type: NodePort\n{}  selector: {{app: echo}}\n  \
         ports: [{{port: 53, protocol: UDP, targetPort: 5353, nodePort: {UDP_NODE_PORT}}}]\n---\n",
        dual("10.96.0.91", "fd00:96::91")
    ));
    out.push_str(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web-local, namespace: shop}}\nspec:\n  \
         type: NodePort\n  externalTrafficPolicy: Local\n{}  selector: {{app: web}}\n  \
         ports: [{{port: 80, targetPort: 8080, nodePort: {LOCAL_NODE_PORT}}}]\n---\n",
        dual("10.96.0.93", "fd00:96::93")
    ));
    out.push_str(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web-sticky, namespace: shop}}\nspec:\n  \
         type: NodePort\n  sessionAffinity: ClientIP\n{}  selector: {{app: web}}\n  \
         ports: [{{port: 80, targetPort: 8080, nodePort: {STICKY_NODE_PORT}}}]\n---\n",
        dual("10.96.0.94", "fd00:96::94")
    ));
    out.push_str(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: nobody, namespace: shop}}\nspec:\n  \
         type: NodePort\n{}  selector: {{app: nobody-has-this}}\n  \
         ports: [{{port: 80, targetPort: 8080, nodePort: {EMPTY_NODE_PORT}}}]\n",
        dual("10.96.0.92", "fd00:96::92")
    ));
    out
}

fn files() -> tempfile::TempDir {
    let dir = common::document_roots(&["web-1", "web-2"]);
    std::fs::write(dir.path().join("udp_echo.py"), UDP_ECHO).expect("udp_echo.py");
    std::fs::write(dir.path().join("udp_ask.py"), UDP_ASK).expect("udp_ask.py");
    dir
}

fn external(sandbox: &TestSandbox, cmd: &[&str]) -> std::process::Output {
    let mut all = vec!["sandbox", "exec", "--external", "--"];
    all.extend_from_slice(cmd);
    sandbox.porin(&all)
}

/// One HTTP request from the external client: the backend that answered.
fn get(sandbox: &TestSandbox, url: &str) -> Option<String> {
    let out = external(sandbox, &["curl", "-g", "-sS", "-m", "2", url]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Through `url` the external client reaches both backends (local and remote).
fn check_both_backends(sandbox: &TestSandbox, url: &str) {
    let warm = common::warm_up(Duration::from_secs(30), 2, || get(sandbox, url));
    assert_eq!(
        warm.len(),
        2,
        "{url}: not both backends answered the external client over IPv6 ({warm:?})\nagent logs:\n{}",
        sandbox.agent_logs()
    );
    let seen: BTreeSet<String> = (0..16)
        .map(|i| get(sandbox, url).unwrap_or_else(|| panic!("request {i} to {url} failed")))
        .collect();
    assert_eq!(
        seen,
        BTreeSet::from(["web-1".to_string(), "web-2".to_string()]),
        "through {url}: the local and the remote backend"
    );
}

#[test]
fn ipv6_node_port_external_and_load_balancer_ips_reach_both_backends_from_outside() {
    let dir = files();
    let sandbox = TestSandbox::up_with_args(
        &[("00-shop.yaml", &manifests(dir.path()))],
        Some("[plugins.lb]\nenabled = true\n"),
        2,
        &["--ipv6"],
    );
    for (ip, node) in [(EXTERNAL_IP, NODE_1), (INGRESS_IP, NODE_2)] {
        let out = external(
            &sandbox,
            &[
                "ip",
                "-6",
                "route",
                "add",
                &format!("{ip}/128"),
                "via",
                node,
            ],
        );
        assert!(
            out.status.success(),
            "route {ip} via {node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    for node in [NODE_1, NODE_2] {
        check_both_backends(&sandbox, &format!("http://[{node}]:{HTTP_NODE_PORT}/"));
    }
    for ip in [EXTERNAL_IP, INGRESS_IP] {
        check_both_backends(&sandbox, &format!("http://[{ip}]/"));
    }

    // externalTrafficPolicy: Local: each node sends only to its own backend.
    for (node, backend) in [(NODE_1, "web-1"), (NODE_2, "web-2")] {
        let url = format!("http://[{node}]:{LOCAL_NODE_PORT}/");
        let seen: BTreeSet<String> = (0..8)
            .map(|i| get(&sandbox, &url).unwrap_or_else(|| panic!("request {i} to {url} failed")))
            .collect();
        assert_eq!(
            seen,
            BTreeSet::from([backend.to_string()]),
            "{url}: externalTrafficPolicy Local keeps to the node's own backend"
        );
    }

    // sessionAffinity: ClientIP on the NodePort: the external client stays on the backend
    // its first connection got, on both nodes.
    for node in [NODE_1, NODE_2] {
        let url = format!("http://[{node}]:{STICKY_NODE_PORT}/");
        let first = common::wait_for(Duration::from_secs(30), || get(&sandbox, &url));
        let Some(first) = first else {
            panic!(
                "{url} never answered\nagent logs:\n{}",
                sandbox.agent_logs()
            );
        };
        let seen: BTreeSet<String> = (0..16)
            .map(|i| get(&sandbox, &url).unwrap_or_else(|| panic!("request {i} to {url} failed")))
            .collect();
        assert_eq!(
            seen,
            BTreeSet::from([first]),
            "{url}: ClientIP affinity keeps the external client on one backend"
        );
    }

    // UDP through node-1 to the backend on node-2 (DNAT + SNAT); the echo comes back from
    // the NodePort.
    let ask = dir.path().join("udp_ask.py").display().to_string();
    let port = UDP_NODE_PORT.to_string();
    let echoed = common::wait_for(Duration::from_secs(20), || {
        let out = external(&sandbox, &["python3", &ask, NODE_1, &port]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    assert_eq!(
        echoed.as_deref(),
        Some(format!("ping6 {NODE_1} {UDP_NODE_PORT}").as_str()),
        "UDP over the IPv6 NodePort\nagent logs:\n{}",
        sandbox.agent_logs()
    );

    // A NodePort without backends refuses at once (a TCP RST from the frontend), no timeout.
    common::socket_probe::assert_node_port_refuses_at_once(
        &sandbox,
        dir.path(),
        "node-1",
        NODE_1,
        EMPTY_NODE_PORT,
    );

    let kinds = common::service_kinds(&sandbox, "node-1");
    for want in [
        (format!("[::]:{HTTP_NODE_PORT}"), "NodePort"),
        (format!("[::]:{UDP_NODE_PORT}"), "NodePort"),
        (format!("[{EXTERNAL_IP}]:80"), "ExternalIP"),
        (format!("[{INGRESS_IP}]:80"), "LoadBalancer"),
        ("[fd00:96::90]:80".to_string(), "ClusterIP"),
    ] {
        assert!(
            kinds.contains(&(want.0.clone(), want.1.to_string())),
            "{want:?} not in {kinds:?}"
        );
    }
    sandbox.down_and_check();
}
