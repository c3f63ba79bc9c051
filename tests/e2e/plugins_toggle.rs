//! End to end: plugins turned off and on at runtime (`porin plugins disable|enable`)
//! while established TCP connections carry traffic. A client on node-2 keeps two
//! long-lived connections to an echo server on node-1, one to the pod directly and one
//! through a ClusterIP service, exchanging a message every 20 ms. Toggling observe,
//! policy and lb (each off, then on) must never stall either connection for a second or
//! more; each toggle takes under 500 ms from command to effect (the reload of the
//! programs with new switches included). The toggles are printed for docs/benchmarks.md.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestSandbox, pod_yaml, porin_bin, str_of};
use serde_json::Value;

const VIP: &str = "10.96.0.40";

/// Echo server: one thread per connection, answers every line.
const ECHO: &str = r#"
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9000)); s.listen(16)
def serve(c):
    f = c.makefile("rwb", buffering=0)
    for line in f:
        f.write(line)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// Prober: one connection, a line every 20 ms, the longest wait for an echo (ms) and
/// the number of echoes, as JSON, after `seconds`. A broken connection is reported.
const PROBE: &str = r#"
import json, socket, sys, time
host, seconds = sys.argv[1], float(sys.argv[2])
for attempt in range(100):
    try:
        s = socket.create_connection((host, 9000), timeout=5); break
    except OSError:
        time.sleep(0.1)
s.settimeout(10)
f = s.makefile("rwb", buffering=0)
print("connected", flush=True)
end = time.monotonic() + seconds
last = time.monotonic(); worst = 0.0; echoes = 0; error = None
while time.monotonic() < end:
    try:
        f.write(b"ping\n"); line = f.readline()
        if not line: error = "closed"; break
    except OSError as e:
        error = str(e); break
    now = time.monotonic(); worst = max(worst, now - last); last = now; echoes += 1
    time.sleep(0.02)
print(json.dumps({"max_gap_ms": worst * 1000.0, "echoes": echoes, "error": error}), flush=True)
"#;

fn manifests() -> String {
    let mut yaml = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n");
    yaml += &pod_yaml(
        "shop",
        "echo",
        "echo",
        "node-1",
        Some(r#"["python3", "/tmp/porin-toggle-echo.py"]"#),
    );
    yaml += &pod_yaml("shop", "client", "client", "node-2", None);
    yaml += &format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: echo, namespace: shop}}\n\
         spec:\n  clusterIP: {VIP}\n  selector: {{app: echo}}\n  ports: [{{port: 9000, targetPort: 9000}}]\n"
    );
    yaml
}

/// Starts a prober in `shop/client` (in the pod's namespace and cgroup, like any pod
/// process), connected to `host`.
fn spawn_probe(sandbox: &TestSandbox, script: &Path, host: &str, seconds: u64) -> Child {
    let mut child = Command::new(porin_bin())
        .args(["sandbox", "exec", "shop/client", "--", "python3"])
        .arg(script)
        .args([host, &seconds.to_string()])
        .env("PORIN_SANDBOX_DIR", sandbox.state_dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the prober");
    // Wait for "connected", so the toggles hit an established connection.
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("prober stdout");
    let mut reader = std::io::BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line).expect("prober output");
    assert_eq!(line.trim(), "connected", "prober to {host} did not connect");
    child.stdout = Some(reader.into_inner());
    child
}

fn probe_result(child: Child) -> Value {
    let out = child.wait_with_output().expect("prober");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("prober printed no result ({e}): {text}"))
}

/// Toggles `plugin` on every node; returns the slowest agent's time (ms).
fn toggle(sandbox: &TestSandbox, plugin: &str, on: bool) -> f64 {
    let verb = if on { "enable" } else { "disable" };
    let started = Instant::now();
    let run = sandbox.porin(&["plugins", verb, plugin, "-o", "json"]);
    let wall = started.elapsed().as_secs_f64() * 1000.0;
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{verb} {plugin} failed: {stdout}");
    let out: Value = serde_json::from_str(&stdout).expect("toggle JSON");
    let results = out.as_array().expect("one result per node");
    let mut slowest = 0.0f64;
    let mut datapath = 0.0f64;
    for r in results {
        let result = &r["result"];
        assert_eq!(result["changed"], true, "{verb} {plugin}: {r}");
        let ms = result["elapsed_ms"].as_f64().unwrap_or(f64::MAX);
        if ms > slowest {
            slowest = ms;
            datapath = result["datapath_ms"].as_f64().unwrap_or_default();
        }
    }
    eprintln!(
        "toggle {plugin} {verb}: agent {slowest:.0} ms (slowest node; programs {datapath:.0} ms), command {wall:.0} ms for {} nodes",
        results.len()
    );
    slowest
}

fn enabled(sandbox: &TestSandbox, plugin: &str) -> Vec<bool> {
    let out = sandbox.porin(&["plugins", "list", "-o", "json"]);
    let all: Value = serde_json::from_slice(&out.stdout).expect("plugins list JSON");
    all.as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["plugin"]["name"] == plugin)
        .map(|e| e["plugin"]["enabled"] == true)
        .collect()
}

fn overloaded() -> bool {
    let load: f64 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    load > cpus as f64
}

fn node1_config(sandbox: &TestSandbox) -> std::path::PathBuf {
    sandbox.state()["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "node-1"))
        .map(|n| std::path::PathBuf::from(str_of(&n["config_path"])))
        .expect("node-1 config path")
}

fn node1_enabled(sandbox: &TestSandbox, plugin: &str) -> Option<bool> {
    let out = sandbox.porin(&["plugins", "list", "--node", "node-1", "-o", "json"]);
    let all: Value = serde_json::from_slice(&out.stdout).ok()?;
    all.as_array()?
        .iter()
        .find(|e| e["plugin"]["name"] == plugin)
        .map(|e| e["plugin"]["enabled"] == true)
}

fn wait_until(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn toggling_plugins_keeps_established_connections_flowing() {
    common::assert_root();
    let work = tempfile::tempdir().expect("work dir");
    // Pods share the host's file system: the echo server reads its script from /tmp.
    std::fs::write("/tmp/porin-toggle-echo.py", ECHO).expect("write echo server");
    let probe = work.path().join("probe.py");
    std::fs::write(&probe, PROBE).expect("write prober");
    let sandbox = TestSandbox::up_with(
        &[("00-echo.yaml", &manifests())],
        Some("[plugins.lb]\nenabled = true\n\n[plugins.policy]\nenabled = true\n"),
    );
    let echo = str_of(&sandbox.endpoint("shop/echo")["endpoint"]["ipv4"]).to_string();

    let seconds = 14;
    let direct = spawn_probe(&sandbox, &probe, &echo, seconds);
    let service = spawn_probe(&sandbox, &probe, VIP, seconds);
    let started = Instant::now();

    let mut times = Vec::new();
    for plugin in ["observe", "policy", "lb"] {
        times.push((plugin, "disable", toggle(&sandbox, plugin, false)));
        assert!(
            enabled(&sandbox, plugin).iter().all(|e| !e),
            "{plugin} still enabled"
        );
        std::thread::sleep(Duration::from_millis(700));
        times.push((plugin, "enable", toggle(&sandbox, plugin, true)));
        assert!(
            enabled(&sandbox, plugin).iter().all(|e| *e),
            "{plugin} not enabled again"
        );
        std::thread::sleep(Duration::from_millis(700));
    }
    assert!(
        started.elapsed() < Duration::from_secs(seconds - 2),
        "toggles took {:?}: the probers ended before them",
        started.elapsed()
    );

    for (name, result) in [
        ("pod", probe_result(direct)),
        ("service", probe_result(service)),
    ] {
        eprintln!("{name} connection: {result}");
        assert!(
            result["error"].is_null(),
            "{name} connection broke: {result}"
        );
        assert!(
            result["max_gap_ms"].as_f64() < Some(1000.0),
            "{name} connection stalled: {result}"
        );
        assert!(result["echoes"].as_u64() > Some(100), "{result}");
    }
    // Under 500 ms each; on a machine running more than one runnable task per core
    // (CI builders share it), the verifier's share of the CPU doubles that bound.
    let bound = if overloaded() { 1000.0 } else { 500.0 };
    for (plugin, verb, ms) in &times {
        assert!(
            *ms < bound,
            "{verb} {plugin} took {ms:.0} ms (bound {bound} ms)"
        );
    }
    // The service answers new connections again with lb back on.
    let again = sandbox.exec_until_ok(
        "shop/client",
        &[
            "python3",
            "-c",
            &format!("import socket; socket.create_connection(('{VIP}', 9000), timeout=2)"),
        ],
        Duration::from_secs(5),
    );
    assert!(
        again.status.success(),
        "no new connection to the service after lb came back"
    );

    // Config reload: node-1's file changes; policy goes off there, and a broken file
    // changes nothing.
    let config = node1_config(&sandbox);
    let text = std::fs::read_to_string(&config).expect("node-1 config");
    let off = text.replace(
        "[plugins.policy]\nenabled = true",
        "[plugins.policy]\nenabled = false",
    );
    assert_ne!(
        off,
        text,
        "policy section not found in {}",
        config.display()
    );
    std::fs::write(&config, &off).expect("write config");
    wait_until(
        || node1_enabled(&sandbox, "policy") == Some(false),
        "policy off after the file changed",
    );
    std::fs::write(&config, off.replace("enabled = false", "enabled = maybe")).expect("write");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        node1_enabled(&sandbox, "policy"),
        Some(false),
        "a broken file changed plugins"
    );
    assert_eq!(
        node1_enabled(&sandbox, "lb"),
        Some(true),
        "a broken file changed plugins"
    );
    std::fs::write(&config, &text).expect("write config");
    wait_until(
        || node1_enabled(&sandbox, "policy") == Some(true),
        "policy back on after the fix",
    );
    sandbox.down_and_check();
}
