//! End to end: ClusterIP services served by the lb plugin's per-packet DNAT in a real
//! sandbox (`socket_lb = false`; socket-level LB is tested in lb_socket.rs). A client
//! reaches a service whose two backends live on two nodes, sees the
//! service address as its peer, a service without backends is refused at once, and with
//! the plugin disabled the service address is not served. `cilium_bpf_map_pressure`
//! reports the conntrack and NAT maps the traffic filled (core's sampling, every second
//! here) next to the service map (the plugin's mirror), and a plugin turned off keeps
//! no pressure series.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{TestSandbox, metric_value, str_of};

const VIP: &str = "10.96.0.50";
const EMPTY_VIP: &str = "10.96.0.51";

/// Two backends (one per node) serving their own name, a client, and two Services.
fn manifests(www: &std::path::Path) -> String {
    format!(
        r#"{cast}apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  type: ClusterIP
  clusterIP: {VIP}
  selector:
    app: web
  ports:
    - name: http
      port: 80
      targetPort: http
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
        cast = common::shop_with_web_backends(www),
    )
}

fn curl(sandbox: &TestSandbox, url: &str, timeout_s: &str) -> std::process::Output {
    sandbox.exec("shop/client", &["curl", "-sS", "-m", timeout_s, url])
}

#[test]
fn cluster_ip_reaches_both_backends_and_refuses_an_empty_service() {
    let www = common::document_roots(&["web-1", "web-2"]);
    let sandbox = TestSandbox::up_with(
        &[("00-shop.yaml", &manifests(www.path()))],
        Some(
            "[agent]\nmap_pressure_interval_seconds = 1\n\n\
             [plugins.lb]\nenabled = true\nsocket_lb = false\n",
        ),
    );
    let url = format!("http://{VIP}/");

    // socket_lb = false: no socket programs on the node's cgroup.
    let status = sandbox.porin_json(&["status", "--node", "node-1"]);
    let links = std::path::PathBuf::from(str_of(&status[0]["datapath"]["pin_dir"])).join("links");
    assert!(
        links.is_dir() && !links.join("cgroup-connect4").exists(),
        "socket LB links pinned in {} with socket_lb = false",
        links.display()
    );

    // Backends start asynchronously: wait for the first answer.
    let first = sandbox.exec_until_ok(
        "shop/client",
        &["curl", "-s", "-m", "2", url.as_str()],
        Duration::from_secs(20),
    );
    assert!(
        first.status.success(),
        "the service never answered: {}\nagent logs:\n{}",
        String::from_utf8_lossy(&first.stderr),
        sandbox.agent_logs()
    );

    // Many connections, all served, spread over both nodes' backends.
    let mut seen = BTreeSet::new();
    for i in 0..40 {
        let out = curl(&sandbox, &url, "3");
        assert!(
            out.status.success(),
            "request {i} to the service failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        seen.insert(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    assert_eq!(
        seen,
        BTreeSet::from(["web-1".to_string(), "web-2".to_string()]),
        "both backends (local and remote) serve the service"
    );

    assert_traffic_fills_map_pressure(&sandbox);
    assert_map_list_counts_entries(&sandbox);

    // `porin service list` shows what each agent serves: the VIP with both backends, the
    // empty service with none.
    let listed = sandbox.porin_json(&["service", "list"]);
    let frontends: Vec<&serde_json::Value> = listed
        .as_array()
        .expect("one document per node")
        .iter()
        .flat_map(|n| n["services"].as_array().into_iter().flatten())
        .collect();
    let served = frontends
        .iter()
        .find(|s| s["frontend"] == format!("{VIP}:80") && s["protocol"] == "TCP")
        .unwrap_or_else(|| panic!("{VIP}:80 missing from porin service list: {listed}"));
    assert_eq!(served["type"], "ClusterIP");
    assert_eq!(
        served["backends"].as_array().map(Vec::len),
        Some(2),
        "{served}"
    );
    let empty = frontends
        .iter()
        .find(|s| s["frontend"] == format!("{EMPTY_VIP}:80"))
        .unwrap_or_else(|| panic!("{EMPTY_VIP}:80 missing from porin service list: {listed}"));
    assert_eq!(
        empty["backends"].as_array().map(Vec::len),
        Some(0),
        "{empty}"
    );

    // The client talked to the service address: its flows name the VIP, not a backend.
    let flows = sandbox.flows(500);
    let to_vip = flows.iter().find(|f| {
        str_of(&f["source"]["pod_name"]) == "client"
            && str_of(&f["IP"]["destination"]) == VIP
            && f["l4"]["TCP"]["destination_port"] == 80
            && str_of(&f["trace_observation_point"]) == "FROM_ENDPOINT"
    });
    assert!(to_vip.is_some(), "no client -> {VIP}:80 flow in {flows:#?}");
    let reply_from_vip = flows.iter().any(|f| {
        str_of(&f["IP"]["source"]) == VIP
            && str_of(&f["destination"]["pod_name"]) == "client"
            && f["is_reply"] == true
    });
    assert!(reply_from_vip, "replies reach the client from {VIP}");

    // No backends: refused at once (ICMP port unreachable), not a timeout; reported as
    // a drop with Cilium's reason.
    let started = Instant::now();
    let out = curl(&sandbox, &format!("http://{EMPTY_VIP}/"), "5");
    let elapsed = started.elapsed();
    assert!(!out.status.success(), "a service without backends answered");
    assert!(
        elapsed < Duration::from_secs(1),
        "refusal took {elapsed:?}: the client waited for a timeout"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    // curl's exit code 7: the connection itself failed (ICMP unreachable -> refused).
    assert!(err.contains("curl: (7)"), "curl said: {err}");
    let dropped = common::wait_for(Duration::from_secs(3), || {
        sandbox.flows(500).into_iter().find(|f| {
            str_of(&f["drop_reason_desc"]) == "SERVICE_BACKEND_NOT_FOUND"
                && str_of(&f["IP"]["destination"]) == EMPTY_VIP
        })
    });
    assert!(
        dropped.is_some(),
        "no SERVICE_BACKEND_NOT_FOUND drop flow in {:#?}",
        sandbox
            .flows(500)
            .into_iter()
            .filter(|f| str_of(&f["IP"]["destination"]) == EMPTY_VIP)
            .collect::<Vec<_>>()
    );

    assert_disabled_lb_keeps_no_pressure(&sandbox);
    sandbox.down_and_check();
}

fn pressure(metrics: &str, map: &str) -> Option<f64> {
    metric_value(
        metrics,
        "cilium_bpf_map_pressure",
        &[&format!("map_name=\"{map}\"")],
    )
}

/// The client's node (node-1) reports its conntrack and per-packet NAT maps as sampled
/// (every second here), the service map from the plugin's mirror.
fn assert_traffic_fills_map_pressure(sandbox: &TestSandbox) {
    let filled = common::wait_for(Duration::from_secs(15), || {
        let metrics = sandbox.metrics("node-1");
        let all = ["porin_ct", "porin_lb_nat", "porin_lb_rnat", "porin_lb_svc"]
            .map(|map| pressure(&metrics, map).unwrap_or(0.0));
        all.iter().all(|p| *p > 0.0).then_some(all)
    });
    assert!(
        filled.is_some(),
        "conntrack, NAT and service map pressure on node-1 stayed at 0 or missing:\n{}\nagent logs:\n{}",
        sandbox.metrics("node-1"),
        sandbox.agent_logs()
    );
}

/// `porin map list -o json` counts node-1's maps when asked: conntrack and per-packet NAT
/// hold the client's connections, the service map its frontends, each within its size.
fn assert_map_list_counts_entries(sandbox: &TestSandbox) {
    let listed = sandbox.porin_json(&["map", "list", "--node", "node-1"]);
    let rows = listed.as_array().cloned().unwrap_or_default();
    let map = |name: &str| {
        rows.iter()
            .map(|r| &r["map"])
            .find(|m| m["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing from `porin map list`: {listed:#}"))
    };
    for (name, owner) in [
        ("porin_ct", "core"),
        ("porin_lb_nat", "lb"),
        ("porin_lb_svc", "lb"),
    ] {
        let m = map(name);
        let entries = m["entries"].as_u64().unwrap_or(0);
        let max = m["max_entries"].as_u64().unwrap_or(0);
        assert!(
            entries > 0 && entries <= max,
            "{name}: {entries} of {max} entries: {m:#}"
        );
        assert_eq!(m["owner"], owner, "{m:#}");
        let ratio = m["pressure"].as_f64().unwrap_or(-1.0);
        assert!(
            (ratio - entries as f64 / max as f64).abs() < 1e-9,
            "{name}: pressure {ratio} is not {entries}/{max}"
        );
    }
    assert!(
        rows.iter().all(|r| r["node"] == "node-1"),
        "--node node-1 listed other nodes: {listed:#}"
    );
}

/// With the lb plugin turned off its maps lose their series (sampled and mirrored);
/// conntrack keeps its own.
fn assert_disabled_lb_keeps_no_pressure(sandbox: &TestSandbox) {
    let out = sandbox.porin(&["plugins", "disable", "lb"]);
    assert!(
        out.status.success(),
        "disabling lb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let check = |when: &str| {
        let metrics = sandbox.metrics("node-1");
        for map in [
            "porin_lb_nat",
            "porin_lb_rnat",
            "porin_np_nat",
            "porin_lb_svc",
        ] {
            assert_eq!(
                pressure(&metrics, map),
                None,
                "{when}: {map} still reports pressure with the lb plugin off:\n{metrics}"
            );
        }
        assert!(
            pressure(&metrics, "porin_ct").is_some_and(|p| p > 0.0),
            "{when}: conntrack pressure gone:\n{metrics}"
        );
    };
    check("right after `plugins disable lb`");
    // Two sampling passes later the sampler has not brought them back.
    std::thread::sleep(Duration::from_millis(2500));
    check("two sampling passes after `plugins disable lb`");
}

#[test]
fn without_the_lb_plugin_the_service_address_is_not_served() {
    let www = common::document_roots(&["web-1", "web-2"]);
    let sandbox = TestSandbox::up(&[("00-shop.yaml", &manifests(www.path()))]);

    // The backends themselves are up (so a failure below is the missing service)...
    let web2 = sandbox.endpoint("shop/web-2");
    let ip = str_of(&web2["endpoint"]["ipv4"]).to_string();
    assert!(!ip.is_empty(), "{web2}");
    let direct = sandbox.exec_until_ok(
        "shop/client",
        &["curl", "-s", "-m", "2", &format!("http://{ip}:8080/")],
        Duration::from_secs(20),
    );
    assert_eq!(String::from_utf8_lossy(&direct.stdout).trim(), "web-2");

    // ...but nothing translates the VIP.
    let out = curl(&sandbox, &format!("http://{VIP}/"), "2");
    assert!(
        !out.status.success(),
        "the VIP answered without the lb plugin: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    sandbox.down_and_check();
}
