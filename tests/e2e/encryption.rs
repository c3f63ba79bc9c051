//! End to end: the encryption plugin's WireGuard tunnel between two sandbox nodes
//! (Porin's userspace device, `porin wireguard`: this kernel has no WireGuard module).
//!
//! A pod on node-2 fetches a page from a pod on node-1 while tcpdump captures the
//! underlay bridge and node-1's WireGuard device: on the underlay there is only
//! WireGuard UDP between the node addresses and the page's marker never appears; inside
//! the tunnel the page appears in clear. A same-node fetch never enters the tunnel.
//! `porin encrypt status -o json` reports the peer with a recent handshake and bytes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{TestSandbox, str_of, wait_for};
use serde_json::Value;

const CROSS_MARKER: &str = "PORIN-CROSS-NODE-MARKER-7f3a9c";
const LOCAL_MARKER: &str = "PORIN-SAME-NODE-MARKER-41b2e8";
const WG_PORT: u16 = 51871;

fn manifests(www: &Path) -> String {
    let www = www.display();
    let pod = |name: &str, node: &str, command: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: sec\n  labels:\n    app: {name}\nspec:\n  nodeName: {node}\n  containers:\n    - name: c\n      image: ignored\n      command: {command}\n---\n"
        )
    };
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: sec\n---\n{}{}{}",
        pod(
            "web",
            "node-1",
            &format!(
                r#"["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0", "--directory", "{www}"]"#
            )
        ),
        pod("remote-client", "node-2", r#"["sleep", "infinity"]"#),
        pod("local-client", "node-1", r#"["sleep", "infinity"]"#),
    )
}

/// tcpdump writing every packet of `iface` in `netns` to a file until stopped.
struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    fn start(netns: &str, iface: &str, file: PathBuf) -> Self {
        let child = Command::new("ip")
            .args([
                "netns", "exec", netns, "tcpdump", "-i", iface, "-n", "-s", "0", "-U", "-w",
            ])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tcpdump");
        // tcpdump creates the file once it listens.
        assert!(
            wait_for(Duration::from_secs(5), || file.exists().then_some(())).is_some(),
            "tcpdump on {netns}/{iface} did not start"
        );
        std::thread::sleep(Duration::from_millis(300));
        Self { child, file }
    }

    /// Stop and return the raw capture and tcpdump's decoding of it.
    fn stop(mut self) -> (Vec<u8>, String) {
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.child.kill();
        let _ = self.child.wait();
        let raw = std::fs::read(&self.file).expect("read capture");
        let out = Command::new("tcpdump")
            .args(["-n", "-r"])
            .arg(&self.file)
            .output()
            .expect("tcpdump -r");
        (raw, String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The underlay namespace: the one holding the bridge.
fn underlay_netns(state: &Value) -> String {
    state["netns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| str_of(n).to_string())
        .find(|ns| {
            Command::new("ip")
                .args(["-n", ns, "link", "show", "br0"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("no underlay namespace with br0")
}

fn node_netns(state: &Value, node: &str) -> String {
    state["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == node))
        .map(|n| str_of(&n["netns"]).to_string())
        .unwrap_or_else(|| panic!("no node {node}"))
}

fn node_status<'a>(all: &'a Value, node: &str) -> &'a Value {
    all.as_array()
        .and_then(|a| a.iter().find(|s| s["node"] == node))
        .unwrap_or_else(|| panic!("no encrypt status for {node}: {all}"))
}

#[test]
fn cross_node_pod_traffic_is_wireguard_on_the_underlay_and_same_node_is_not() {
    let www = tempfile::tempdir().expect("www");
    std::fs::write(www.path().join("cross.txt"), CROSS_MARKER).expect("cross.txt");
    std::fs::write(www.path().join("local.txt"), LOCAL_MARKER).expect("local.txt");
    let sandbox = TestSandbox::up_with(
        &[("00-sec.yaml", &manifests(www.path()))],
        Some("[plugins.encryption]\nenabled = true\n"),
    );
    let state = sandbox.state();
    let web_ip = str_of(&sandbox.endpoint("sec/web")["endpoint"]["ipv4"]).to_string();
    assert!(!web_ip.is_empty(), "web has no address");

    // Both nodes publish a key and have each other as peer before traffic starts.
    let status = wait_for(Duration::from_secs(15), || {
        let s = sandbox.porin_json(&["encrypt", "status"]);
        let ready = ["node-1", "node-2"].iter().all(|n| {
            node_status(&s, n)["peers"]
                .as_array()
                .is_some_and(|p| p.len() == 1)
        });
        ready.then_some(s)
    })
    .unwrap_or_else(|| {
        panic!(
            "peers never appeared: {}\n{}",
            sandbox.porin_json(&["encrypt", "status"]),
            sandbox.agent_logs()
        )
    });
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

    let cross = sandbox.exec_until_ok(
        "sec/remote-client",
        &[
            "curl",
            "-sS",
            "-m",
            "5",
            &format!("http://{web_ip}:8080/cross.txt"),
        ],
        Duration::from_secs(20),
    );
    assert!(
        String::from_utf8_lossy(&cross.stdout).contains(CROSS_MARKER),
        "cross-node fetch failed: {} {}\n{}",
        String::from_utf8_lossy(&cross.stdout),
        String::from_utf8_lossy(&cross.stderr),
        sandbox.agent_logs()
    );
    let local = sandbox.exec_until_ok(
        "sec/local-client",
        &[
            "curl",
            "-sS",
            "-m",
            "5",
            &format!("http://{web_ip}:8080/local.txt"),
        ],
        Duration::from_secs(20),
    );
    assert!(
        String::from_utf8_lossy(&local.stdout).contains(LOCAL_MARKER),
        "same-node fetch failed: {}",
        String::from_utf8_lossy(&local.stderr)
    );

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
