//! End to end: `porin relay` over a two-node sandbox. Flows from both nodes come
//! out of one Observer API in time order (read by `porin observe --server` and
//! by a Python grpcio client); when one agent is killed the relay reports it
//! unavailable (ServerStatus, GetNodes, a node status event in a followed
//! stream) and keeps serving the other; when the agent is back, it is connected
//! again and its new flows reach the same followed stream.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{SHOP_WEB_AND_CLIENT as PODS, TestSandbox, porin_bin, str_of, wait_for};
use serde_json::Value;

/// A child process killed (and reaped) on drop, whose stdout lines arrive on a
/// channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn spawn(sandbox: &TestSandbox, args: &[&str]) -> Self {
        let mut child = Command::new(porin_bin())
            .args(args)
            .env("PORIN_SANDBOX_DIR", sandbox.state_dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("porin {args:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// Lines until one satisfies `f` (or the timeout passes).
    fn until(&self, timeout: Duration, f: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = std::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = f(&line);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no matching line within {timeout:?}; saw:\n{}",
            seen.join("\n")
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the Python grpcio client saw at `target`.
fn python_client(target: &str) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(root.join("plugins/observe/tests/hubble_client.py"))
        .arg(root.join("proto/proto"))
        .arg(target)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python client (grpcio from scripts/deps.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("client JSON")
}

fn time_ns(r: &Value) -> i128 {
    let t = str_of(&r["time"]);
    // RFC 3339 with nanoseconds in UTC: sortable as text at fixed width, but
    // parse the fraction to compare across differing widths.
    let (secs, frac) = t.trim_end_matches('Z').split_once('.').unwrap_or((t, "0"));
    let digits: String = secs.chars().filter(char::is_ascii_digit).collect();
    let frac = format!("{frac:0<9}");
    digits.parse::<i128>().expect("time") * 1_000_000_000 + frac[..9].parse::<i128>().expect("ns")
}

#[test]
fn relay_merges_nodes_and_survives_an_agent_restart() {
    common::assert_root();
    let sandbox = TestSandbox::up(&[("10-pods.yaml", PODS)]);
    let web = str_of(&sandbox.endpoint("shop/web")["endpoint"]["ipv4"]).to_string();
    common::fetch_from_client(&sandbox, &web);

    // An ephemeral port: other tests may run relays at the same time.
    let relay = Running::spawn(
        &sandbox,
        &[
            "relay",
            "--listen-address",
            "127.0.0.1:0",
            "--probe-interval-ms",
            "200",
            "--sort-buffer-drain-timeout-ms",
            "200",
        ],
    );
    let first = relay.until(Duration::from_secs(10), |l| {
        l.starts_with("relay listening on ")
    });
    let address = first
        .last()
        .and_then(|l| l.strip_prefix("relay listening on "))
        .expect("address")
        .to_string();

    // Both agents connected; the stored flows of both, in time order.
    let status = wait_for(Duration::from_secs(10), || {
        let seen = python_client(&address);
        (seen["num_connected_nodes"] == 2
            && seen["flow_nodes"].as_array().is_some_and(|n| n.len() == 2))
        .then_some(seen)
    })
    .unwrap_or_else(|| panic!("relay never saw both nodes: {}", python_client(&address)));
    assert_eq!(status["num_unavailable_nodes"], 0, "{status}");
    assert_eq!(status["nodes"], serde_json::json!(["node-1", "node-2"]));
    assert_eq!(
        status["flow_nodes"],
        serde_json::json!(["node-1", "node-2"])
    );
    assert_eq!(status["flow_times_sorted"], true, "{status}");
    assert!(
        status["namespaces"]
            .as_array()
            .is_some_and(|n| n.contains(&"shop".into())),
        "{status}"
    );

    // `porin observe --server` against the relay: both nodes, time order, and the
    // server-side filter still applies.
    let out = sandbox.porin(&[
        "observe", "--server", &address, "-o", "json", "--last", "200", "--to-pod", "shop/web",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let responses: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("GetFlowsResponse JSON"))
        .collect();
    let flows: Vec<&Value> = responses
        .iter()
        .filter(|r| r.get("flow").is_some())
        .collect();
    assert!(!flows.is_empty(), "no flows to shop/web through the relay");
    for r in &flows {
        assert_eq!(r["flow"]["destination"]["pod_name"], "web", "{r}");
    }
    let nodes: std::collections::BTreeSet<&str> =
        flows.iter().map(|r| str_of(&r["node_name"])).collect();
    assert_eq!(nodes.into_iter().collect::<Vec<_>>(), ["node-1", "node-2"]);
    let times: Vec<i128> = flows.iter().map(|r| time_ns(r)).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "not in time order: {responses:#?}"
    );

    // A followed stream through the relay, while node-2's agent dies.
    let follow = Running::spawn(
        &sandbox,
        &["observe", "--server", &address, "--follow", "-o", "json"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let state = sandbox.state();
    let pid = state["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "node-2"))
        .and_then(|n| n["agent_pid"].as_u64())
        .expect("node-2 agent pid");
    // SAFETY: kill(2) on the sandbox agent this test started.
    unsafe { libc::kill(i32::try_from(pid).expect("pid"), libc::SIGKILL) };

    let is_status = |line: &str, state: &str| {
        serde_json::from_str::<Value>(line).is_ok_and(|r| {
            r["node_status"]["state_change"] == state
                && r["node_status"]["node_names"] == serde_json::json!(["node-2"])
        })
    };
    follow.until(Duration::from_secs(10), |l| {
        is_status(l, "NODE_UNAVAILABLE")
    });
    let down = wait_for(Duration::from_secs(10), || {
        let seen = python_client(&address);
        (seen["num_connected_nodes"] == 1).then_some(seen)
    })
    .expect("relay reports one connected node");
    assert_eq!(
        down["unavailable_nodes"],
        serde_json::json!(["node-2"]),
        "{down}"
    );
    assert_eq!(down["num_unavailable_nodes"], 1, "{down}");
    // GetNodes still lists it, as unavailable (NODE_UNAVAILABLE = 2).
    assert_eq!(
        down["nodes"],
        serde_json::json!(["node-1", "node-2"]),
        "{down}"
    );
    assert_eq!(down["node_states"], serde_json::json!([1, 2]), "{down}");
    // The relay keeps serving the other node.
    assert_eq!(down["flow_nodes"], serde_json::json!(["node-1"]), "{down}");

    let out = sandbox.porin(&["sandbox", "restart-agent", "node-2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    follow.until(Duration::from_secs(15), |l| is_status(l, "NODE_CONNECTED"));
    // New traffic: node-2's new flows arrive on the same followed stream.
    common::fetch_from_client(&sandbox, &web);
    follow.until(Duration::from_secs(15), |l| {
        serde_json::from_str::<Value>(l).is_ok_and(|r| {
            r["node_name"] == "node-2" && r["flow"]["source"]["pod_name"] == "client"
        })
    });
    let up = python_client(&address);
    assert_eq!(up["num_connected_nodes"], 2, "{up}");
    assert_eq!(up["unavailable_nodes"], serde_json::json!([]), "{up}");
    drop(follow);
    drop(relay);

    // A relay told only node-1's Peer service finds node-2 through it (every
    // agent publishes its Hubble address on its Node).
    let node1 = sandbox.state_dir.path().join("nodes/node-1/hubble.sock");
    let peer_service = format!("unix://{}", node1.display());
    let relay = Running::spawn(
        &sandbox,
        &[
            "relay",
            "--listen-address",
            "127.0.0.1:0",
            "--peer-service",
            &peer_service,
        ],
    );
    let first = relay.until(Duration::from_secs(10), |l| {
        l.starts_with("relay listening on ")
    });
    let address = first
        .last()
        .and_then(|l| l.strip_prefix("relay listening on "))
        .expect("address")
        .to_string();
    let found = wait_for(Duration::from_secs(15), || {
        let seen = python_client(&address);
        (seen["num_connected_nodes"] == 2).then_some(seen)
    })
    .unwrap_or_else(|| panic!("Peer service: {}", python_client(&address)));
    assert_eq!(
        found["nodes"],
        serde_json::json!(["node-1", "node-2"]),
        "{found}"
    );
    drop(relay);
    sandbox.down_and_check();
}
