//! What the connectivity test deploys: its namespace, clients, echo servers, a DNS
//! server and a Service, and the policies its scenarios apply one phase at a time.
//! Plain Kubernetes YAML, the same for the sandbox and a cluster.

use std::path::Path;

/// The namespace every test workload lives in.
pub const NAMESPACE: &str = "porin-connectivity-test";
/// Port the echo servers listen on.
pub const ECHO_PORT: u16 = 8080;
/// The echo Service's ClusterIP and port (both echo servers are its backends).
pub const SERVICE_IP: &str = "10.96.0.99";
pub const SERVICE_PORT: u16 = 80;
/// NodePorts of the Services whose one backend is on node-1 (local to the node the
/// external client addresses) or on node-2 (remote).
pub const NODE_PORT_LOCAL: u16 = 31097;
pub const NODE_PORT_REMOTE: u16 = 31098;
/// Names the test's DNS server answers, and the "world" addresses they point to
/// (stand-ins outside the cluster, on the underlay).
pub const ALLOWED_NAME: &str = "allowed.connectivity.test";
pub const REFUSED_NAME: &str = "refused.connectivity.test";
pub const OUTSIDE_NAME: &str = "outside.example";
pub const ALLOWED_WORLD_IP: &str = "192.168.200.231";
pub const REFUSED_WORLD_IP: &str = "192.168.200.232";
/// Port of the world stand-in's web server.
pub const WORLD_PORT: u16 = 8443;
/// A page only the cross-node encryption check fetches: its text must never appear on
/// the underlay.
pub const CROSS_NODE_MARKER: &str = "PORIN-CONNECTIVITY-CROSS-NODE-7d1e";

/// The pods: (name, node, app label, command).
pub fn pods(www: &Path) -> Vec<(&'static str, &'static str, &'static str, String)> {
    let echo = |name: &str| {
        format!(
            r#"["python3", "-m", "http.server", "{ECHO_PORT}", "--bind", "0.0.0.0", "--directory", "{}"]"#,
            www.join(name).display()
        )
    };
    let dns = format!(
        r#"["dnsmasq", "-k", "--user=root", "--pid-file", "--no-resolv", "--no-hosts", "--host-record={ALLOWED_NAME},{ALLOWED_WORLD_IP}", "--host-record={REFUSED_NAME},{REFUSED_WORLD_IP}", "--host-record={OUTSIDE_NAME},{REFUSED_WORLD_IP}"]"#
    );
    let sleep = r#"["sleep", "infinity"]"#.to_string();
    vec![
        ("client", "node-1", "client", sleep.clone()),
        ("client-other", "node-2", "client-other", sleep),
        ("echo-same-node", "node-1", "echo", echo("echo-same-node")),
        ("echo-other-node", "node-2", "echo", echo("echo-other-node")),
        ("dns", "node-2", "dns", dns),
    ]
}

/// Writes each echo server's document root: its own name as index, an allowed and a
/// private page for the L7 scenarios, the cross-node marker for the encryption one;
/// and the world stand-in's (`world`).
pub fn write_document_roots(www: &Path) -> std::io::Result<()> {
    for name in ["echo-same-node", "echo-other-node"] {
        let dir = www.join(name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("index.html"), name)?;
        std::fs::write(dir.join("allowed.txt"), "allowed\n")?;
        std::fs::write(dir.join("private.txt"), "private\n")?;
        std::fs::write(dir.join("marker.txt"), CROSS_NODE_MARKER)?;
    }
    let world = www.join("world");
    std::fs::create_dir_all(&world)?;
    std::fs::write(world.join("index.html"), "world")?;
    Ok(())
}

/// The namespace, the pods, the echo Service (ClusterIP) and a NodePort Service per
/// echo server.
pub fn base_manifests(www: &Path) -> String {
    let mut out = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n---\n");
    for (name, node, app, command) in pods(www) {
        let extra = match name {
            "dns" => "\n    k8s-app: kube-dns",
            "echo-same-node" => "\n    side: same-node",
            "echo-other-node" => "\n    side: other-node",
            _ => "",
        };
        out.push_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\n  labels:\n    app: {app}{extra}\nspec:\n  nodeName: {node}\n  containers:\n    - name: c\n      image: ignored\n      command: {command}\n---\n"
        ));
    }
    out.push_str(&format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: {NAMESPACE}
spec:
  clusterIP: {SERVICE_IP}
  selector:
    app: echo
  ports:
    - name: http
      port: {SERVICE_PORT}
      targetPort: {ECHO_PORT}
---
"#
    ));
    // One NodePort Service per echo server, so a request through node-1 reaches a
    // known backend: a local one, or a remote one (DNAT + SNAT through the node).
    for (side, ip, node_port) in [
        ("same-node", "10.96.0.97", NODE_PORT_LOCAL),
        ("other-node", "10.96.0.98", NODE_PORT_REMOTE),
    ] {
        out.push_str(&format!(
            r#"apiVersion: v1
kind: Service
metadata:
  name: echo-{side}
  namespace: {NAMESPACE}
spec:
  type: NodePort
  clusterIP: {ip}
  selector:
    app: echo
    side: {side}
  ports:
    - name: http
      port: {SERVICE_PORT}
      targetPort: {ECHO_PORT}
      nodePort: {node_port}
---
"#
        ));
    }
    out
}

fn cnp(name: &str, body: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\nspec:\n{body}"
    )
}

/// L3/L4: the client may reach the other node's echo server on its port and nothing
/// else (egress); that echo server accepts only the client (ingress).
pub fn l3l4_policies() -> Vec<(&'static str, String)> {
    vec![
        (
            "cct-client-egress",
            cnp(
                "cct-client-egress",
                &format!(
                    "  endpointSelector:\n    matchLabels: {{app: client}}\n  egress:\n    - toEndpoints:\n        - matchLabels: {{app: echo, side: other-node}}\n      toPorts:\n        - ports: [{{port: \"{ECHO_PORT}\", protocol: TCP}}]\n"
                ),
            ),
        ),
        (
            "cct-echo-ingress",
            cnp(
                "cct-echo-ingress",
                &format!(
                    "  endpointSelector:\n    matchLabels: {{app: echo, side: other-node}}\n  ingress:\n    - fromEndpoints:\n        - matchLabels: {{app: client}}\n      toPorts:\n        - ports: [{{port: \"{ECHO_PORT}\", protocol: TCP}}]\n"
                ),
            ),
        ),
    ]
}

/// Deny over allow: every pod may reach the same-node echo server, but a deny rule
/// refuses the client.
pub fn deny_policies() -> Vec<(&'static str, String)> {
    vec![(
        "cct-deny-client",
        cnp(
            "cct-deny-client",
            "  endpointSelector:\n    matchLabels: {app: echo, side: same-node}\n  ingress:\n    - fromEndpoints:\n        - {}\n  ingressDeny:\n    - fromEndpoints:\n        - matchLabels: {app: client}\n",
        ),
    )]
}

/// FQDN: DNS to the test's server through the proxy for `*.connectivity.test`, and
/// connections to the addresses of the allowed name only.
pub fn fqdn_policies() -> Vec<(&'static str, String)> {
    vec![(
        "cct-client-fqdn",
        cnp(
            "cct-client-fqdn",
            &format!(
                "  endpointSelector:\n    matchLabels: {{app: client}}\n  egress:\n    - toEndpoints:\n        - matchLabels: {{k8s-app: kube-dns}}\n      toPorts:\n        - ports: [{{port: \"53\", protocol: ANY}}]\n          rules:\n            dns:\n              - matchPattern: \"*.connectivity.test\"\n    - toFQDNs:\n        - matchName: \"{ALLOWED_NAME}\"\n      toPorts:\n        - ports: [{{port: \"{WORLD_PORT}\", protocol: TCP}}]\n"
            ),
        ),
    )]
}

/// L7: the client may `GET /allowed*` on the echo servers; anything else gets the
/// proxy's 403.
pub fn l7_policies() -> Vec<(&'static str, String)> {
    vec![(
        "cct-client-http",
        cnp(
            "cct-client-http",
            &format!(
                "  endpointSelector:\n    matchLabels: {{app: client}}\n  egress:\n    - toEndpoints:\n        - matchLabels: {{app: echo}}\n      toPorts:\n        - ports: [{{port: \"{ECHO_PORT}\", protocol: TCP}}]\n          rules:\n            http:\n              - method: GET\n                path: \"/allowed.*\"\n"
            ),
        ),
    )]
}
