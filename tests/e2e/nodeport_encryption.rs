//! End to end: NodePort to a remote backend with the encryption plugin on. A client
//! outside the cluster asks node-2's address for a NodePort whose one backend is on
//! node-1; node-2 DNATs and SNATs (to its node address) and, since node-1's pods are
//! reached through the WireGuard device, sends the packet into the tunnel
//! (`bpf/lib/nodeport.h`, `np_forward_remote`). node-1 accepts node-2's address from the
//! tunnel because each peer's allowed IPs hold its node address besides its pod CIDR.
//!
//! Checked with captures: the request crosses the underlay only as WireGuard UDP (no
//! TCP from node-2's address to the pod there), node-1's device carries it in clear with
//! node-2's address as the source, and the client gets the page. The backend's reply to
//! node-2's address goes back into the tunnel (`encrypt_node_reply` in its pod program)
//! and node-2 reverse-translates it on its WireGuard device's ingress
//! (`porin_from_tunnel`): nothing of the connection crosses the underlay between the
//! nodes in clear, and the backend's flow is marked encrypted.

mod common;

use std::time::Duration;

use common::wireguard::{
    CROSS_MARKER, Capture, WG_PORT, contains, manifests, node_netns, node_status, underlay_netns,
    wait_for_peers,
};
use common::{TestSandbox, str_of, wait_for};

const NODE_PORT: u16 = 30081;
const NODE_1: &str = "192.168.200.1";
const NODE_2: &str = "192.168.200.2";

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: sec
spec:
  type: NodePort
  clusterIP: 10.96.0.61
  selector:
    app: web
  ports:
    - name: http
      port: 80
      targetPort: 8080
      nodePort: 30081
";

#[test]
fn node_port_to_a_remote_backend_goes_through_the_tunnel() {
    let www = tempfile::tempdir().expect("www");
    std::fs::write(www.path().join("cross.txt"), CROSS_MARKER).expect("cross.txt");
    let sandbox = TestSandbox::up_with(
        &[
            ("00-sec.yaml", &manifests(www.path())),
            ("01-service.yaml", SERVICE),
        ],
        Some("[plugins.lb]\nenabled = true\n\n[plugins.encryption]\nenabled = true\n"),
    );
    let state = sandbox.state();
    let web_ip = str_of(&sandbox.endpoint("sec/web")["endpoint"]["ipv4"]).to_string();
    assert!(!web_ip.is_empty(), "web has no address");

    // Each node lists the other's node address in its peer's allowed IPs.
    let status = wait_for_peers(&sandbox);
    for (node, peer_address) in [("node-1", NODE_2), ("node-2", NODE_1)] {
        let allowed = &node_status(&status, node)["peers"][0]["allowed_ips"];
        assert!(
            allowed
                .as_array()
                .is_some_and(|a| a.iter().any(|ip| ip == &format!("{peer_address}/32"))),
            "{node}: the peer's node address is not in its allowed IPs: {status:#}"
        );
    }
    let device1 = str_of(&node_status(&status, "node-1")["device"]).to_string();

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

    // Through node-2's address to the backend on node-1. Retried: the first packets may
    // wait for a WireGuard handshake.
    let url = format!("http://{NODE_2}:{NODE_PORT}/cross.txt");
    let fetch_page = || {
        wait_for(Duration::from_secs(20), || {
            let out = sandbox.porin(&[
                "sandbox",
                "exec",
                "--external",
                "--",
                "curl",
                "-sS",
                "-m",
                "3",
                &url,
            ]);
            let body = String::from_utf8_lossy(&out.stdout).into_owned();
            body.contains(CROSS_MARKER).then_some(body)
        })
    };
    let page = fetch_page();
    // The client's own request to node-2 is on the underlay in clear (it is outside the
    // cluster); what must not be there are the legs between node-2 and the pod.
    let (_, under_text) = underlay.stop();
    let (tunnel_raw, tunnel_text) = tunnel.stop();
    assert!(
        page.is_some(),
        "GET {url} never returned the page\nunderlay:\n{under_text}\ntunnel:\n{tunnel_text}\n{}",
        sandbox.agent_logs()
    );

    // The request crossed the underlay encrypted: WireGuard UDP from node-2 to node-1,
    // and no TCP from node-2's address to the pod there.
    assert!(
        under_text.lines().any(|l| l.contains(&format!("{NODE_2}."))
            && l.contains(&format!("> {NODE_1}.{WG_PORT}:"))
            && l.contains("UDP")),
        "no WireGuard UDP from node-2 to node-1 on the underlay:\n{under_text}"
    );
    assert!(
        !under_text
            .lines()
            .any(|l| l.contains(&format!("{NODE_2}.")) && l.contains(&format!("> {web_ip}.8080"))),
        "the SNATed request crossed the underlay in clear:\n{under_text}"
    );
    // Inside the tunnel on node-1: the request, from node-2's address (the SNAT).
    assert!(
        tunnel_text
            .lines()
            .any(|l| l.contains(&format!("{NODE_2}.")) && l.contains(&format!("> {web_ip}.8080"))),
        "the request did not arrive through node-1's tunnel device:\n{tunnel_text}"
    );
    assert!(
        contains(&tunnel_raw, "GET /cross.txt"),
        "no request line in the tunnel:\n{tunnel_text}"
    );

    // The reply went back through the tunnel too: nothing from the pod to node-2's
    // address on the underlay (so the page never crossed it between the nodes), and the
    // reply with the page in node-1's tunnel capture.
    assert!(
        !under_text
            .lines()
            .any(|l| l.contains(&format!("{web_ip}.8080 > {NODE_2}."))),
        "the backend's reply crossed the underlay in clear:\n{under_text}"
    );
    assert!(
        under_text.lines().any(|l| l.contains(&format!("{NODE_1}."))
            && l.contains(&format!("> {NODE_2}.{WG_PORT}:"))
            && l.contains("UDP")),
        "no WireGuard UDP from node-1 to node-2 on the underlay:\n{under_text}"
    );
    assert!(
        tunnel_text
            .lines()
            .any(|l| l.contains(&format!("{web_ip}.8080 > {NODE_2}."))),
        "the reply did not leave through node-1's tunnel device:\n{tunnel_text}"
    );
    assert!(
        contains(&tunnel_raw, CROSS_MARKER),
        "the page is not in the tunnel:\n{tunnel_text}"
    );

    // The backend's flow (entering web on node-1) came through the tunnel: marked
    // encrypted, its source node-2's address (the SNAT).
    let marked = wait_for(Duration::from_secs(10), || {
        sandbox.flows(2000).into_iter().find(|f| {
            f["node_name"] == "node-1"
                && str_of(&f["IP"]["source"]) == NODE_2
                && str_of(&f["IP"]["destination"]) == web_ip
                && f["IP"]["encrypted"] == true
        })
    });
    assert!(
        marked.is_some(),
        "the NodePort connection's flow on node-1 is not marked encrypted: {:#?}",
        sandbox.flows(2000)
    );

    // node-2's tunnel program is a pinned link like the device's; it survives an agent
    // restart (the new agent replaces the program in it) and replies keep arriving.
    let device2 = str_of(&node_status(&status, "node-2")["device"]).to_string();
    let node2 = sandbox.porin_json(&["status", "--node", "node-2"]);
    let pin = std::path::PathBuf::from(str_of(&node2[0]["datapath"]["pin_dir"]))
        .join("links")
        .join(format!("netdev-{device2}-ingress"));
    assert!(
        pin.exists(),
        "no tunnel link pinned at {}\n{}",
        pin.display(),
        sandbox.agent_logs()
    );
    let restarted = sandbox.porin(&["sandbox", "restart-agent", "node-2"]);
    assert!(
        restarted.status.success(),
        "restart-agent failed: {}\n{}",
        String::from_utf8_lossy(&restarted.stderr),
        sandbox.agent_logs()
    );
    assert!(pin.exists(), "the tunnel link pin went with the restart");
    assert!(
        fetch_page().is_some(),
        "GET {url} failed after node-2's agent restarted\n{}",
        sandbox.agent_logs()
    );
}
