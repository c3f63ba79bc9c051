//! Restart without disruption: a TCP stream between pods on two nodes keeps
//! flowing while both agents are killed with SIGKILL and restarted; the new
//! agents reuse the pinned maps and links and are ready within a second.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{TestSandbox, str_of};
use serde_json::Value;

/// The receiver: one connection, records the longest silence between reads.
const SINK: &str = r#"
import json, socket, sys, time
out = sys.argv[1]
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 9000)); srv.listen(1)
conn, _ = srv.accept()
total, last, gap = 0, None, 0.0
while True:
    data = conn.recv(65536)
    now = time.monotonic()
    if not data:
        break
    if last is not None:
        gap = max(gap, now - last)
    last = now
    total += len(data)
json.dump({"bytes": total, "max_gap_ms": gap * 1000}, open(out + ".tmp", "w"))
import os; os.rename(out + ".tmp", out)
"#;

/// The sender: 1 KiB every 10 ms for the given seconds; prints what it sent.
const SOURCE: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], 9000), timeout=30)
end, sent = time.monotonic() + float(sys.argv[2]), 0
while time.monotonic() < end:
    s.sendall(b"x" * 1024); sent += 1024
    time.sleep(0.01)
s.close(); print(sent)
"#;

fn manifests(result: &str) -> String {
    let sink = SINK.replace('"', "\\\"").replace('\n', "\\n");
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: sink, namespace: shop, labels: {{app: sink}}}}
spec:
  nodeName: node-1
  containers:
    - name: sink
      image: ignored
      command: ["python3", "-c", "{sink}", "{result}"]
---
apiVersion: v1
kind: Pod
metadata: {{name: source, namespace: shop, labels: {{app: source}}}}
spec:
  nodeName: node-2
  containers:
    - name: source
      image: ignored
      command: ["sleep", "infinity"]
"#
    )
}

/// Kernel ids of everything pinned under a directory (links and maps).
fn pinned_ids(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut ids = Vec::new();
    for sub in ["links", "maps"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let kind = if sub == "links" { "link" } else { "map" };
            let out = Command::new("bpftool")
                .args(["-j", kind, "show", "pinned"])
                .arg(entry.path())
                .output()
                .expect("bpftool (make deps installs it)");
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            if let Some(id) = v["id"].as_u64() {
                ids.push((entry.file_name().to_string_lossy().into_owned(), id));
            }
        }
    }
    ids.sort();
    ids
}

fn node_pin_dir(sandbox: &TestSandbox, node: &str) -> std::path::PathBuf {
    let status = sandbox.porin_json(&["status", "--node", node]);
    std::path::PathBuf::from(str_of(&status[0]["datapath"]["pin_dir"]))
}

fn restart(sandbox: &TestSandbox, node: &str) -> u64 {
    let out = sandbox.porin(&["sandbox", "restart-agent", node, "--kill"]);
    assert!(
        out.status.success(),
        "restart of {node} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        sandbox.agent_logs()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let ms = text
        .split("ready in ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no readiness time in {text:?}"));
    println!("agent of {node} ready {ms} ms after restart");
    ms
}

#[test]
fn stream_survives_agent_kill_and_restart() {
    let result = std::env::temp_dir().join(format!("porin-e2e-stream-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&result);
    let sandbox = TestSandbox::up(&[("pods.yaml", &manifests(&result.display().to_string()))]);
    let sink_ip = str_of(&sandbox.endpoint("shop/sink")["endpoint"]["ipv4"]).to_string();
    let pins_1 = node_pin_dir(&sandbox, "node-1");
    let pins_2 = node_pin_dir(&sandbox, "node-2");
    let ids_1 = pinned_ids(&pins_1);
    let ids_2 = pinned_ids(&pins_2);
    assert!(
        ids_1.iter().any(|(n, _)| n.ends_with("-ingress")),
        "no pinned links on node-1: {ids_1:?}"
    );
    assert!(
        ids_1.iter().any(|(n, _)| n == "porin_ct"),
        "no pinned conntrack map: {ids_1:?}"
    );

    // Give python a moment to listen, then stream for 8 s in the background.
    std::thread::sleep(Duration::from_millis(1500));
    let porin = common::porin_bin();
    let state_dir = sandbox.state_dir.path().to_path_buf();
    let sender = std::thread::spawn(move || {
        Command::new(porin)
            .args([
                "sandbox",
                "exec",
                "shop/source",
                "--",
                "python3",
                "-c",
                SOURCE,
                &sink_ip,
                "8",
            ])
            .env("PORIN_SANDBOX_DIR", state_dir)
            .output()
            .expect("run the sender")
    });

    std::thread::sleep(Duration::from_secs(2));
    let ready_1 = restart(&sandbox, "node-1");
    std::thread::sleep(Duration::from_secs(2));
    let ready_2 = restart(&sandbox, "node-2");

    let sent = sender.join().expect("sender thread");
    assert!(
        sent.status.success(),
        "sender failed: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let sent: u64 = String::from_utf8_lossy(&sent.stdout)
        .trim()
        .parse()
        .expect("bytes sent");
    let outcome: Value = common::wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&result)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
    })
    .expect("the receiver's result");
    let _ = std::fs::remove_file(&result);
    let max_gap = outcome["max_gap_ms"].as_f64().expect("gap");
    println!(
        "stream: {sent} bytes sent, {} received, longest stall {max_gap:.0} ms",
        outcome["bytes"]
    );
    assert_eq!(
        outcome["bytes"].as_u64(),
        Some(sent),
        "bytes lost across the restarts"
    );
    assert!(
        max_gap < 1000.0,
        "the stream stalled {max_gap:.0} ms during the agent restarts"
    );
    assert!(
        ready_1 < 1000 && ready_2 < 1000,
        "agents took {ready_1} / {ready_2} ms to be ready"
    );

    // The new agents reopened the same kernel objects: same map and link ids.
    assert_eq!(pinned_ids(&pins_1), ids_1, "node-1 pins were not reused");
    assert_eq!(pinned_ids(&pins_2), ids_2, "node-2 pins were not reused");
    assert_eq!(sandbox.endpoints().len(), 2, "endpoints restored");

    // Traffic after the restart is still observed (the sink has exited, so the
    // connection is refused; the attempt still makes flows).
    let sink = str_of(&sandbox.endpoint("shop/sink")["endpoint"]["ipv4"]).to_string();
    let connect = "import socket,sys\ntry: socket.create_connection((sys.argv[1], 9000), timeout=3)\nexcept OSError: pass";
    let _ = sandbox.exec("shop/source", &["python3", "-c", connect, &sink]);
    let seen = common::wait_for(Duration::from_secs(5), || {
        sandbox.flows(200).into_iter().find(|f| {
            str_of(&f["source"]["pod_name"]) == "source"
                && f["l4"]["TCP"]["destination_port"] == 9000
        })
    });
    assert!(seen.is_some(), "no flows after the restart");
    sandbox.down_and_check();
}
