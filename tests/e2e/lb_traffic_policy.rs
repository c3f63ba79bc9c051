//! `externalTrafficPolicy: Local` and `internalTrafficPolicy: Local`: a NodePort reached
//! through a node only serves that node's backends, without SNAT (the backend sees the
//! external client's address), and through a node without a local backend it is not served;
//! a ClusterIP with `internalTrafficPolicy: Local` only sends a pod to backends on its own
//! node.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{TestSandbox, manifest_path, str_of, wait_for};

const NODE_1: &str = "192.168.200.1";
const NODE_2: &str = "192.168.200.2";
const EXTERNAL_CLIENT: &str = "192.168.200.250";
/// eTP Local over web-1 (node-1) and web-2 (node-2).
const BOTH_PORT: u16 = 30090;
/// eTP Local over web-1 only (its EndpointSlice).
const ONE_PORT: u16 = 30091;
/// iTP Local over both.
const INTERNAL_VIP: &str = "10.96.0.95";
const CONNECTIONS: usize = 12;

fn service(name: &str, vip: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: shop\nspec:\n\
         {extra}  clusterIP: {vip}\n  ports:\n    - name: http\n      port: 80\n      \
         targetPort: http\n"
    )
}

fn manifests(www: &std::path::Path) -> String {
    let selector = "  selector:\n    app: web\n";
    [
        common::shop_with_web_backends(www),
        common::pod_yaml("shop", "client-2", "client", "node-2", None),
        service(
            "ext-both",
            "10.96.0.93",
            &format!("  type: NodePort\n  externalTrafficPolicy: Local\n{selector}"),
        ) + &format!("      nodePort: {BOTH_PORT}\n---\n"),
        service(
            "ext-one",
            "10.96.0.94",
            "  type: NodePort\n  externalTrafficPolicy: Local\n",
        ) + &format!("      nodePort: {ONE_PORT}\n---\n"),
        service(
            "int-local",
            INTERNAL_VIP,
            &format!("  internalTrafficPolicy: Local\n{selector}"),
        ),
    ]
    .concat()
}

/// ext-one's EndpointSlice: web-1 only.
fn one_slice(web1: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: ext-one-abc\n  \
         namespace: shop\n  labels:\n    kubernetes.io/service-name: ext-one\naddressType: IPv4\n\
         ports:\n  - name: http\n    port: 8080\n    protocol: TCP\nendpoints:\n  - addresses: \
         [\"{web1}\"]\n    conditions:\n      ready: true\n"
    )
}

fn external_get(sandbox: &TestSandbox, node: &str, port: u16) -> Option<String> {
    let url = format!("http://{node}:{port}/");
    let out = sandbox.porin(&[
        "sandbox",
        "exec",
        "--external",
        "--",
        "curl",
        "-sS",
        "-m",
        "2",
        &url,
    ]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The backends `CONNECTIONS` answers came from (a failed one panics).
fn backends_of(
    sandbox: &TestSandbox,
    what: &str,
    mut get: impl FnMut() -> Option<String>,
) -> BTreeSet<String> {
    (0..CONNECTIONS)
        .map(|i| {
            get().unwrap_or_else(|| {
                panic!(
                    "{what}: connection {i} failed\nagent logs:\n{}",
                    sandbox.agent_logs()
                )
            })
        })
        .collect()
}

#[test]
fn local_traffic_policies_serve_only_node_local_backends() {
    let www = common::document_roots(&["web-1", "web-2"]);
    let sandbox = TestSandbox::up_with(
        &[("00-shop.yaml", &manifests(www.path()))],
        Some("[plugins.lb]\nenabled = true\n"),
    );
    let web1 = str_of(&sandbox.endpoint("shop/web-1")["endpoint"]["ipv4"]).to_string();
    std::fs::write(manifest_path(&sandbox, "10-slice.yaml"), one_slice(&web1)).expect("slice");

    // externalTrafficPolicy: Local, a backend on each node: each node serves its own.
    for (node, local) in [(NODE_1, "web-1"), (NODE_2, "web-2")] {
        let up = wait_for(Duration::from_secs(20), || {
            external_get(&sandbox, node, BOTH_PORT)
        });
        assert!(
            up.is_some(),
            "{node}:{BOTH_PORT} never answered\nagent logs:\n{}",
            sandbox.agent_logs()
        );
        let seen = backends_of(&sandbox, node, || external_get(&sandbox, node, BOTH_PORT));
        assert_eq!(seen, BTreeSet::from([local.to_string()]), "through {node}");
    }
    // Without SNAT: web-2 (reached through node-2) sees the external client itself.
    let unsnated = wait_for(Duration::from_secs(10), || {
        sandbox
            .flows(2000)
            .iter()
            .any(|f| {
                str_of(&f["destination"]["pod_name"]) == "web-2"
                    && str_of(&f["IP"]["source"]) == EXTERNAL_CLIENT
            })
            .then_some(())
    });
    assert!(
        unsnated.is_some(),
        "no external client -> web-2 flow: SNATed?"
    );

    // A node without a local backend does not serve the NodePort; the one with it does.
    let up = wait_for(Duration::from_secs(20), || {
        external_get(&sandbox, NODE_1, ONE_PORT)
    });
    assert_eq!(up.as_deref(), Some("web-1"), "{NODE_1}:{ONE_PORT}");
    assert_eq!(
        external_get(&sandbox, NODE_2, ONE_PORT),
        None,
        "node-2 has no local backend of ext-one but answered"
    );

    // internalTrafficPolicy: Local: each client pod only reaches its own node's backend.
    let url = format!("http://{INTERNAL_VIP}/");
    for (client, local) in [("shop/client", "web-1"), ("shop/client-2", "web-2")] {
        let up = wait_for(Duration::from_secs(20), || {
            common::curl_body(&sandbox, client, &url)
        });
        assert!(up.is_some(), "{client} never reached {INTERNAL_VIP}");
        let seen = backends_of(&sandbox, client, || {
            common::curl_body(&sandbox, client, &url)
        });
        assert_eq!(seen, BTreeSet::from([local.to_string()]), "from {client}");
    }
    sandbox.down_and_check();
}
