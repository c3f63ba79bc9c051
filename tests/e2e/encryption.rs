//! End to end: the encryption plugin's WireGuard tunnel between two sandbox nodes
//! (Porin's userspace device, `porin wireguard`: this kernel has no WireGuard module).
//!
//! A pod on node-2 fetches a page from a pod on node-1 while tcpdump captures the
//! underlay bridge and node-1's WireGuard device: on the underlay there is only
//! WireGuard UDP between the node addresses and the page's marker never appears; inside
//! the tunnel the page appears in clear. A same-node fetch never enters the tunnel.
//! `porin encrypt status -o json` reports the peer with a recent handshake and bytes.

//!
//! Strict mode: node-2's route to node-1's pods is replaced by a plain underlay route;
//! the pod's packets are then dropped by the datapath with `UNENCRYPTED_TRAFFIC` (195),
//! counted, and never appear on the underlay; restoring the tunnel route restores
//! traffic.

mod common;

use std::process::Command;
use std::time::Duration;

use common::wireguard::{
    CROSS_MARKER, Capture, LOCAL_MARKER, WG_PORT, contains, fetch, fetch_until, node_netns,
    node_status, underlay_netns, up, wait_for_peers,
};
use common::{metric_value, str_of, wait_for};

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
    fetch_until(
        &sandbox,
        "sec/remote-client",
        &url,
        CROSS_MARKER,
        Duration::from_secs(20),
    );

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
    fetch_until(
        &sandbox,
        "sec/remote-client",
        &url,
        CROSS_MARKER,
        Duration::from_secs(10),
    );
    sandbox.down_and_check();
}
