//! `sessionAffinity: ClientIP`: every new connection of a client to such a Service reaches
//! the same backend, while a Service without affinity spreads the same client over both
//! backends; when the client's backend leaves the Service, the client moves to one that is
//! left. Run with socket LB (the default: the client is its pod's network namespace) and
//! with per-packet LB (`socket_lb = false`: the client is its address).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{TestSandbox, manifest_path, str_of, wait_for};

const STICKY_VIP: &str = "10.96.0.91";
const PLAIN_VIP: &str = "10.96.0.92";
const CONNECTIONS: usize = 16;

/// A Service over the `app: web` pods; `sticky` gets `sessionAffinity: ClientIP` and its
/// backends from an EndpointSlice the test writes ([`write_slice`]) instead of its selector.
fn service(name: &str, vip: &str, sticky: bool) -> String {
    let spec = if sticky {
        "  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n      timeoutSeconds: 600\n"
    } else {
        "  selector:\n    app: web\n"
    };
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: shop
spec:
  clusterIP: {vip}
{spec}  ports:
    - name: http
      port: 80
      targetPort: http
---
"#
    )
}

fn manifests(www: &std::path::Path) -> String {
    format!(
        "{cast}{sticky}{plain}",
        cast = common::shop_with_web_backends(www),
        sticky = service("sticky", STICKY_VIP, true),
        plain = service("plain", PLAIN_VIP, false),
    )
}

/// The sticky Service's one EndpointSlice, written atomically.
fn write_slice(sandbox: &TestSandbox, addresses: &[&str]) {
    let endpoints: String = addresses
        .iter()
        .map(|a| format!("  - addresses: [\"{a}\"]\n    conditions:\n      ready: true\n"))
        .collect();
    let slice = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: sticky-abc\n  \
         namespace: shop\n  labels:\n    kubernetes.io/service-name: sticky\naddressType: IPv4\n\
         ports:\n  - name: http\n    port: 8080\n    protocol: TCP\nendpoints:\n{endpoints}"
    );
    let tmp = manifest_path(sandbox, ".slice.tmp");
    std::fs::write(&tmp, slice).expect("write slice");
    std::fs::rename(&tmp, manifest_path(sandbox, "10-slice.yaml")).expect("rename slice");
}

/// The body (the backend's name) of one new connection from `shop/client`.
fn answer(sandbox: &TestSandbox, vip: &str) -> Option<String> {
    common::curl_body(sandbox, "shop/client", &format!("http://{vip}/"))
}

/// The backends `CONNECTIONS` new connections reached.
fn reached(sandbox: &TestSandbox, vip: &str) -> BTreeSet<String> {
    (0..CONNECTIONS)
        .map(|i| {
            answer(sandbox, vip).unwrap_or_else(|| {
                panic!(
                    "connection {i} to {vip} failed\nagent logs:\n{}",
                    sandbox.agent_logs()
                )
            })
        })
        .collect()
}

fn affinity_holds_across_connections(agent_config: &str) {
    let www = common::document_roots(&["web-1", "web-2"]);
    let sandbox = TestSandbox::up_with(
        &[("00-shop.yaml", &manifests(www.path()))],
        Some(agent_config),
    );
    let ip = |pod: &str| str_of(&sandbox.endpoint(pod)["endpoint"]["ipv4"]).to_string();
    let (web1, web2) = (ip("shop/web-1"), ip("shop/web-2"));
    write_slice(&sandbox, &[&web1, &web2]);
    // Both backends serve (through the Service without affinity) before anything is counted.
    let warm = common::warm_up(Duration::from_secs(20), 2, || answer(&sandbox, PLAIN_VIP));
    assert_eq!(
        warm.len(),
        2,
        "not both backends answered {PLAIN_VIP} ({warm:?})\nagent logs:\n{}",
        sandbox.agent_logs()
    );
    let up = wait_for(Duration::from_secs(20), || answer(&sandbox, STICKY_VIP));
    assert!(
        up.is_some(),
        "{STICKY_VIP} never answered\nagent logs:\n{}",
        sandbox.agent_logs()
    );

    // The control: without affinity the same client reaches both backends.
    let plain = reached(&sandbox, PLAIN_VIP);
    assert_eq!(
        plain.len(),
        2,
        "{CONNECTIONS} connections to {PLAIN_VIP}: {plain:?}"
    );
    // With affinity: one backend for every connection.
    let sticky = reached(&sandbox, STICKY_VIP);
    assert_eq!(
        sticky.len(),
        1,
        "{CONNECTIONS} connections to {STICKY_VIP} reached {sticky:?}"
    );

    // `porin service list` shows the affinity and its timeout.
    let listed = sandbox.porin_json(&["service", "list", "--node", "node-1"]);
    let frontends = listed[0]["services"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let sticky_fe = frontends
        .iter()
        .find(|s| str_of(&s["frontend"]) == format!("{STICKY_VIP}:80"))
        .unwrap_or_else(|| panic!("no {STICKY_VIP}:80 in {listed}"));
    assert_eq!(sticky_fe["affinity"]["type"], "ClientIP", "{sticky_fe}");
    assert_eq!(sticky_fe["affinity"]["timeout_seconds"], 600, "{sticky_fe}");

    // The client's backend leaves the Service's slice: the client moves to the other one
    // and stays there.
    let bound = sticky.into_iter().next().unwrap_or_default();
    let (other, other_ip) = if bound == "web-1" {
        ("web-2", &web2)
    } else {
        ("web-1", &web1)
    };
    write_slice(&sandbox, &[other_ip]);
    let moved = wait_for(Duration::from_secs(30), || {
        (answer(&sandbox, STICKY_VIP).as_deref() == Some(other)).then_some(())
    });
    assert!(
        moved.is_some(),
        "the client never left {bound} for {other}\nagent logs:\n{}",
        sandbox.agent_logs()
    );
    assert_eq!(
        reached(&sandbox, STICKY_VIP),
        BTreeSet::from([other.to_string()])
    );
    sandbox.down_and_check();
}

#[test]
fn socket_lb_client_ip_affinity_holds_across_connections() {
    affinity_holds_across_connections("[plugins.lb]\nenabled = true\n");
}

#[test]
fn per_packet_client_ip_affinity_holds_across_connections() {
    affinity_holds_across_connections("[plugins.lb]\nenabled = true\nsocket_lb = false\n");
}
