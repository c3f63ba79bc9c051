//! End to end: the encryption plugin's WireGuard tunnel between two sandbox nodes
//! (Porin's userspace device, `porin wireguard`: this kernel has no WireGuard module).
//!
//! A pod on node-2 fetches a page from a pod on node-1 while tcpdump captures the
//! underlay bridge and node-1's WireGuard device: on the underlay there is only
//! WireGuard UDP between the node addresses and the page's marker never appears; inside
//! the tunnel the page appears in clear. A same-node fetch never enters the tunnel.
//! `porin encrypt status -o json` reports the peer with a recent handshake and bytes, and
//! the agent's metrics endpoint the `porin_wireguard_*` metrics. The cross-node flows are
//! marked encrypted on both nodes, the same-node ones are not.

//!
//! Resilience: node-1's agent killed and restarted (its device adopted), node-1's key
//! rotated, node-1's Node withdrawn and published again: each time a pod on node-2
//! reaches node-1's pod again within `RESUME` (WireGuard's handshake retry is 5 s).
//!
//! Strict mode: node-2's route to node-1's pods is replaced by a plain underlay route;
//! the pod's packets are then dropped by the datapath with `UNENCRYPTED_TRAFFIC` (195),
//! counted, and never appear on the underlay; restoring the tunnel route restores
//! traffic.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::wireguard::{
    self, CROSS_MARKER, Capture, LOCAL_MARKER, WG_PORT, contains, fetch, fetch_until, node_netns,
    node_status, underlay_netns, up, wait_for_peers,
};
use common::{TestSandbox, metric_value, str_of, wait_for};

/// How soon traffic must flow again after a disruption: one WireGuard handshake retry
/// (REKEY_TIMEOUT, 5 s) plus the agents' reaction (datastore poll, 1 s supervisor).
const RESUME: Duration = Duration::from_secs(10);

#[test]
fn cross_node_pod_traffic_is_wireguard_on_the_underlay_and_same_node_is_not() {
    let (sandbox, _www) = up("[plugins.encryption]\nenabled = true\n");
    let state = sandbox.state();
    let web_ip = str_of(&sandbox.endpoint("sec/web")["endpoint"]["ipv4"]).to_string();
    assert!(!web_ip.is_empty(), "web has no address");

    // Both nodes publish a key and have each other as peer before traffic starts.
    let status = wait_for_peers(&sandbox);
    for node in ["node-1", "node-2"] {
        assert_eq!(
            node_status(&status, node)["implementation"],
            "porin",
            "Porin's own userspace device is the default: {status}"
        );
    }
    let key1 = str_of(&node_status(&status, "node-1")["public_key"]).to_string();
    let device1 = str_of(&node_status(&status, "node-1")["device"]).to_string();
    assert_eq!(
        str_of(&node_status(&status, "node-2")["peers"][0]["public_key"]),
        key1,
        "node-2's peer is node-1's published key"
    );

    let underlay = Capture::start(
        &underlay_netns(&state),
        "br0",
        sandbox.state_dir.path().join("underlay.pcap"),
    );
    let tunnel = Capture::start(
        &node_netns(&state, "node-1"),
        &device1,
        sandbox.state_dir.path().join("tunnel.pcap"),
    );

    for (pod, page, marker) in [
        ("sec/remote-client", "cross.txt", CROSS_MARKER),
        ("sec/local-client", "local.txt", LOCAL_MARKER),
    ] {
        let url = format!("http://{web_ip}:8080/{page}");
        fetch_until(&sandbox, pod, &url, marker, Duration::from_secs(20));
    }

    let (under_raw, under_text) = underlay.stop();
    let (tunnel_raw, tunnel_text) = tunnel.stop();

    // The underlay: WireGuard UDP between the node addresses, no plaintext.
    assert!(
        !contains(&under_raw, CROSS_MARKER),
        "the page crossed the underlay in clear:\n{under_text}"
    );
    assert!(
        !contains(&under_raw, LOCAL_MARKER),
        "same-node page on the underlay:\n{under_text}"
    );
    let wg_lines: Vec<&str> = under_text
        .lines()
        .filter(|l| l.contains(&format!(".{WG_PORT}:")) && l.contains("UDP"))
        .collect();
    assert!(
        wg_lines
            .iter()
            .any(|l| l.contains("192.168.200.2.") && l.contains("> 192.168.200.1.")),
        "no WireGuard UDP from node-2 to node-1 on the underlay:\n{under_text}"
    );
    assert!(
        !under_text.contains(&format!("{web_ip}.8080")),
        "pod TCP visible on the underlay:\n{under_text}"
    );

    // The tunnel carried the cross-node page (in clear inside it), never the same-node one.
    assert!(
        contains(&tunnel_raw, CROSS_MARKER),
        "cross-node page not in the tunnel:\n{tunnel_text}"
    );
    assert!(
        !contains(&tunnel_raw, LOCAL_MARKER),
        "same-node traffic was tunnelled:\n{tunnel_text}"
    );

    // Flows: the cross-node connection is marked encrypted where it leaves node-2 and where
    // it enters node-1 (Hubble's `IP.encrypted`); the same-node one is not.
    let remote_ip = str_of(&sandbox.endpoint("sec/remote-client")["endpoint"]["ipv4"]).to_string();
    let local_ip = str_of(&sandbox.endpoint("sec/local-client")["endpoint"]["ipv4"]).to_string();
    let between = |f: &serde_json::Value, client: &str| {
        str_of(&f["IP"]["source"]) == client && str_of(&f["IP"]["destination"]) == web_ip
    };
    let flows = wait_for(Duration::from_secs(10), || {
        let flows = sandbox.flows(2000);
        let encrypted_on = |node: &str| {
            flows.iter().any(|f| {
                f["node_name"] == node && between(f, &remote_ip) && f["IP"]["encrypted"] == true
            })
        };
        (encrypted_on("node-1") && encrypted_on("node-2")).then_some(flows)
    })
    .unwrap_or_else(|| {
        panic!(
            "cross-node flows not marked encrypted on both nodes: {:#?}",
            sandbox.flows(2000)
        )
    });
    let local: Vec<_> = flows.iter().filter(|f| between(f, &local_ip)).collect();
    assert!(!local.is_empty(), "no same-node flow: {flows:#?}");
    assert!(
        local.iter().all(|f| f["IP"]["encrypted"] != true),
        "same-node flow marked encrypted: {local:#?}"
    );

    // Status: node-2's peer node-1 with a recent handshake and bytes both ways.
    let status = sandbox.porin_json(&["encrypt", "status"]);
    let peer = &node_status(&status, "node-2")["peers"][0];
    assert_eq!(peer["node"], "node-1", "{status}");
    assert_eq!(
        str_of(&peer["endpoint"]),
        format!("192.168.200.1:{WG_PORT}"),
        "{status}"
    );
    let ago = peer["latest_handshake_seconds_ago"]
        .as_u64()
        .expect("a handshake happened");
    assert!(ago < 120, "handshake {ago}s ago");
    assert!(peer["rx_bytes"].as_u64() > Some(0), "{peer}");
    assert!(peer["tx_bytes"].as_u64() > Some(0), "{peer}");
    let table = sandbox.porin(&["encrypt", "status", "--node", "node-2"]);
    assert!(table.status.success());
    assert!(String::from_utf8_lossy(&table.stdout).contains("node-1"));

    // The plugin's metrics on the agent endpoint, fed by the supervisor every second.
    let metrics = wait_for(Duration::from_secs(5), || {
        let m = sandbox.metrics("node-2");
        let handshakes = metric_value(&m, "porin_wireguard_handshakes_total", &["node-1"]);
        let received = metric_value(&m, "porin_wireguard_received_bytes_total", &["node-1"]);
        (handshakes >= Some(1.0) && received > Some(0.0)).then_some(m)
    });
    let metrics = metrics.unwrap_or_else(|| {
        panic!(
            "no porin_wireguard_* metrics on node-2:\n{}",
            sandbox.metrics("node-2")
        )
    });
    assert_eq!(
        metric_value(&metrics, "porin_wireguard_peers", &[]),
        Some(1.0)
    );
    assert!(
        metric_value(
            &metrics,
            "porin_wireguard_latest_handshake_age_seconds",
            &["node-1"]
        )
        .is_some_and(|age| age < 120.0)
    );

    sandbox.down_and_check();
}

#[test]
fn strict_mode_drops_pod_traffic_that_would_leave_unencrypted() {
    let (sandbox, _www) = up("[plugins.encryption]\nenabled = true\nstrict_mode = true\n");
    let state = sandbox.state();
    let web_ip = str_of(&sandbox.endpoint("sec/web")["endpoint"]["ipv4"]).to_string();
    let status = wait_for_peers(&sandbox);
    let node2 = node_status(&status, "node-2");
    assert_eq!(node2["strict_mode"], true, "{status}");
    let device2 = str_of(&node2["device"]).to_string();
    let cidr1 = str_of(&node2["peers"][0]["allowed_ips"][0]).to_string();
    let url = format!("http://{web_ip}:8080/cross.txt");

    // Through the tunnel strict mode lets everything pass.
    cross_fetch(&sandbox, &url, Duration::from_secs(20));

    // node-2 now routes node-1's pods in clear over the underlay (a leak strict mode
    // exists for: a missing peer key gives the same route from core).
    let ns2 = node_netns(&state, "node-2");
    let route = |args: &[&str]| {
        let out = Command::new("ip")
            .args(["-n", &ns2, "route", "replace", &cidr1])
            .args(args)
            .output()
            .expect("ip route");
        assert!(
            out.status.success(),
            "ip route replace {cidr1} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    route(&["via", "192.168.200.1"]);
    let underlay = Capture::start(
        &underlay_netns(&state),
        "br0",
        sandbox.state_dir.path().join("strict-underlay.pcap"),
    );
    let leaked = fetch(&sandbox, "sec/remote-client", &url, 3);
    let (raw, text) = underlay.stop();
    assert!(
        !leaked.status.success(),
        "the fetch succeeded over a plain route in strict mode: {}",
        String::from_utf8_lossy(&leaked.stdout)
    );
    assert!(
        !contains(&raw, CROSS_MARKER) && !text.contains(&format!("{web_ip}.8080")),
        "pod traffic on the underlay in clear:\n{text}"
    );

    // Dropped in the datapath, with the reason, counted.
    let drops = wait_for(Duration::from_secs(10), || {
        let m = sandbox.metrics("node-2");
        metric_value(
            &m,
            "cilium_drop_count_total",
            &["Traffic is unencrypted", "EGRESS"],
        )
        .filter(|v| *v > 0.0)
    });
    assert!(
        drops.is_some(),
        "no cilium_drop_count_total{{reason=\"Traffic is unencrypted\"}} on node-2:\n{}",
        sandbox.metrics("node-2")
    );
    let flows = sandbox.flows(200);
    assert!(
        flows.iter().any(|f| f["verdict"] == "DROPPED"
            && f["drop_reason"] == 195
            && str_of(&f["IP"]["destination"]) == web_ip),
        "no UNENCRYPTED_TRAFFIC (195) drop flow to {web_ip}: {flows:?}"
    );

    // The tunnel route back: traffic flows again.
    route(&["dev", &device2]);
    cross_fetch(&sandbox, &url, Duration::from_secs(10));
    sandbox.down_and_check();
}

/// The file under `dir` named `name` whose path mentions `part`.
fn find_file(dir: &Path, name: &str, part: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name, part) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name)
            && path.to_string_lossy().contains(part)
        {
            return Some(path);
        }
    }
    None
}

/// node-2's pod fetches node-1's page until it works (`timeout` at most).
fn cross_fetch(sandbox: &TestSandbox, url: &str, timeout: Duration) {
    fetch_until(sandbox, "sec/remote-client", url, CROSS_MARKER, timeout);
}

/// Fetch from node-2 until it works; the time it took.
fn resumes(sandbox: &TestSandbox, url: &str, what: &str) -> Duration {
    let started = Instant::now();
    cross_fetch(sandbox, url, RESUME);
    let took = started.elapsed();
    eprintln!("traffic resumed {took:?} after {what}");
    took
}

fn restart_agent(sandbox: &TestSandbox, node: &str) {
    let out = sandbox.porin(&["sandbox", "restart-agent", node, "--kill"]);
    assert!(
        out.status.success(),
        "restart-agent {node}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn traffic_resumes_after_agent_restart_key_rotation_and_node_return() {
    let (sandbox, _www) = up("[plugins.encryption]\nenabled = true\n");
    let web_ip = str_of(&sandbox.endpoint("sec/web")["endpoint"]["ipv4"]).to_string();
    let url = format!("http://{web_ip}:8080/cross.txt");
    let before = wait_for_peers(&sandbox);
    cross_fetch(&sandbox, &url, Duration::from_secs(20));
    let old_key = str_of(&node_status(&before, "node-1")["public_key"]).to_string();

    // 1. node-1's agent killed: the new agent adopts the running device, same key.
    restart_agent(&sandbox, "node-1");
    resumes(&sandbox, &url, "an agent restart");
    let status = wait_for_peers(&sandbox);
    assert_eq!(
        str_of(&node_status(&status, "node-1")["public_key"]),
        old_key
    );

    // 2. node-1's key rotated (its key file removed, agent restarted): node-2 drops the old
    //    key and takes the new one without a restart of its own.
    let key_file = find_file(sandbox.state_dir.path(), "wireguard-private.key", "node-1")
        .expect("node-1's key file");
    std::fs::remove_file(&key_file).expect("remove the key");
    restart_agent(&sandbox, "node-1");
    let rotated = wait_for(RESUME, || {
        let s = wireguard::status(&sandbox);
        let new_key = str_of(&node_status(&s, "node-1")["public_key"]).to_string();
        let seen = str_of(&node_status(&s, "node-2")["peers"][0]["public_key"]) == new_key;
        (new_key != old_key && seen).then_some(new_key)
    });
    assert!(
        rotated.is_some(),
        "node-2 never took node-1's new key: {}",
        wireguard::status(&sandbox)
    );
    resumes(&sandbox, &url, "a key rotation");

    // 3. node-1's Node withdrawn (its published objects leave the shared runtime
    //    directory): node-2 removes the peer and its route; published again: back.
    let published = sandbox.state_dir.path().join("cluster/node-1.yaml");
    let aside = sandbox.state_dir.path().join("node-1.yaml.aside");
    // node-1's agent is alive and may publish again (it rewrites its file when one of its
    // objects changes): keep it withdrawn until node-2 has let go.
    let gone = wait_for(RESUME, || {
        if published.exists() {
            std::fs::rename(&published, &aside).expect("withdraw node-1");
        }
        let s = wireguard::status(&sandbox);
        node_status(&s, "node-2")["peers"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(())
    });
    assert!(gone.is_some(), "node-2 kept node-1 as a peer after it left");
    // No tunnel route to a node that left (the node's default route may still reach it).
    let ns2 = node_netns(&sandbox.state(), "node-2");
    let device2 = str_of(&node_status(&status, "node-2")["device"]).to_string();
    let routes = Command::new("ip")
        .args(["-n", &ns2, "route", "show", "dev", &device2])
        .output()
        .expect("ip route");
    assert!(
        routes.stdout.is_empty(),
        "node-2 still routes through its tunnel to a node that left: {}",
        String::from_utf8_lossy(&routes.stdout)
    );
    std::fs::rename(&aside, &published).expect("publish node-1 again");
    resumes(&sandbox, &url, "the node's return");
    sandbox.down_and_check();
}
