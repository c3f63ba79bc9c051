//! End to end: the Flow UI (`porin relay --ui`) in Debian's headless Chromium,
//! driven by Playwright (tests/e2e/ui_support/driver.py).
//!
//! - The quickstart sandbox with the policy plugin on and a policy that lets only
//!   payments-api reach postgres: after real traffic the page shows `payments`'
//!   workloads and connections; a connection from ops-toolbox to postgres becomes
//!   a dropped edge within 2 s of the drop in the datapath; clicking it shows the
//!   policy trace (default deny at postgres' ingress); the table filters by edge,
//!   node and verdict; pause holds the page still; a bad namespace is refused by
//!   name; each agent's own UI (`[plugins.observe.ui] listen`) serves the page, the
//!   namespaces and the stream. Screenshots go to target/test-artifacts/ui/.
//! - The scale case: a synthetic Observer with 200 workloads at 2,000 flows/s
//!   behind the relay; the page's frame time, memory and flow-to-screen time are
//!   reported (docs/ui.md).

mod common;
mod ui_support;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use common::{TestSandbox, porin_bin, str_of};
use serde_json::{Value, json};
use ui_support::{Relay, artifacts_dir, driver, synthetic};

/// One test at a time: the scale figures must not include the other test's load.
static BROWSER: Mutex<()> = Mutex::new(());

/// Only payments-api may reach postgres, on 5432: anyone else is in default deny.
const POSTGRES_INGRESS: &str = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: postgres-ingress
  namespace: payments
spec:
  endpointSelector:
    matchLabels: {app: postgres}
  ingress:
    - fromEndpoints:
        - matchLabels: {app: payments-api}
      toPorts:
        - ports: [{port: "5432", protocol: TCP}]
"#;

/// Policy on, and every agent serving the UI over its own flows (in its node's namespace).
const AGENT_CONFIG: &str =
    "[plugins.policy]\nenabled = true\n[plugins.observe.ui]\nlisten = \"127.0.0.1:12000\"\n";

fn quickstart_files() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("examples/quickstart")
        .filter_map(Result::ok)
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(e.path()).expect("read quickstart");
            (name, text)
        })
        .collect();
    files.push(("50-postgres-ingress.yaml".into(), POSTGRES_INGRESS.into()));
    files
}

fn ip(sandbox: &TestSandbox, pod: &str) -> String {
    str_of(&sandbox.endpoint(pod)["endpoint"]["ipv4"]).to_owned()
}

/// `porin sandbox exec POD -- CMD` as a command line the driver runs.
fn exec_line(sandbox: &TestSandbox, pod: &str, cmd: &[&str]) -> Vec<String> {
    let mut line = vec![
        "env".to_owned(),
        format!("PORIN_SANDBOX_DIR={}", sandbox.state_dir.path().display()),
        porin_bin().to_owned(),
        "sandbox".into(),
        "exec".into(),
        pod.into(),
        "--".into(),
    ];
    line.extend(cmd.iter().map(|s| (*s).to_owned()));
    line
}

/// The sandbox's record of one node.
fn node(sandbox: &TestSandbox, name: &str) -> Value {
    sandbox.state()["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == name))
        .unwrap_or_else(|| panic!("no node {name}"))
        .clone()
}

fn rows_all(rows: &Value, f: impl Fn(&Value) -> bool) -> bool {
    rows.as_array()
        .is_some_and(|r| !r.is_empty() && r.iter().all(f))
}

#[test]
fn quickstart_map_dropped_edge_policy_hint_and_filters() {
    let _one = BROWSER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let files = quickstart_files();
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let sandbox = TestSandbox::up_with(&files, Some(AGENT_CONFIG));
    let admin = format!(
        "http://{}:8080/",
        ip(&sandbox, "payments/payments-admin-api")
    );
    let postgres = ip(&sandbox, "payments/postgres");
    let dns = ip(&sandbox, "kube-system/coredns");

    // The quickstart's traffic (as `make demo` sends it).
    let curl = ["curl", "-sS", "-o", "/dev/null", "-m", "3", admin.as_str()];
    let first = sandbox.exec_until_ok("monitoring/prometheus", &curl, Duration::from_secs(15));
    assert!(first.status.success(), "{}", sandbox.agent_logs());
    assert!(sandbox.exec("ops/ops-toolbox", &curl).status.success());
    let nc = format!("nc -w 2 {postgres} 5432 </dev/null");
    let db = sandbox.exec_until_ok(
        "payments/payments-api",
        &["sh", "-c", &nc],
        Duration::from_secs(10),
    );
    assert!(
        db.status.success(),
        "payments-api must reach postgres: {}",
        String::from_utf8_lossy(&db.stderr)
    );
    let dig = [
        "dig",
        "+short",
        "+time=2",
        "+tries=1",
        &format!("@{dns}"),
        "payments.svc.cluster.local",
    ];
    assert!(sandbox.exec("payments/payments-api", &dig).status.success());

    let manifests = sandbox.manifests.path().display().to_string();
    let relay = Relay::start(
        porin_bin(),
        Some(sandbox.state_dir.path()),
        &["--ui-policy", &manifests],
    );
    println!("Flow UI at {}", relay.ui_url);
    let out = artifacts_dir();
    let dropped_edge = "ops/ops-toolbox|payments/postgres|TCP|5432";
    let params = json!({
        "url": relay.ui_url,
        "out": out.display().to_string(),
        "namespace": "payments",
        "nodes": ["payments/payments-api", "payments/postgres", "payments/payments-admin-api",
                  "kube-system/kube-dns", "monitoring/prometheus", "ops/ops-toolbox"],
        "edges": {
            "payments/payments-api|payments/postgres|TCP|5432": "forwarded",
            "monitoring/prometheus|payments/payments-admin-api|TCP|8080": "forwarded",
            "ops/ops-toolbox|payments/payments-admin-api|TCP|8080": "forwarded",
            "payments/payments-api|kube-system/kube-dns|UDP|53": "forwarded",
        },
        "dropped_edge": dropped_edge,
        "deny": exec_line(&sandbox, "ops/ops-toolbox", &["nc", "-w", "2", &postgres, "5432"]),
        "traffic": exec_line(&sandbox, "monitoring/prometheus", &curl),
        "click_node": "payments/postgres",
    });
    let result = driver("quickstart", &[&params.to_string()]);
    println!(
        "quickstart result: {}",
        serde_json::to_string_pretty(&result).expect("json")
    );

    assert_ne!(
        result["deny_exit"], 0,
        "ops-toolbox must not reach postgres"
    );
    let edge = &result["dropped_edge"];
    assert_eq!(edge["verdict"], "dropped", "{edge}");
    assert_eq!(edge["drop_reason"], "POLICY_DENIED", "{edge}");
    let latency = result["datapath_to_screen_ms"].as_f64().expect("latency");
    println!("datapath -> screen: {latency} ms");
    assert!(
        (0.0..2000.0).contains(&latency),
        "the dropped edge took {latency} ms to appear"
    );

    let hint = str_of(&result["hint"]);
    assert!(hint.contains("DENIED"), "{hint}");
    assert!(hint.contains("destination's ingress"), "{hint}");
    assert!(
        hint.contains("default deny") || hint.contains("no rule"),
        "{hint}"
    );

    let edge_rows = &result["edge_rows"];
    assert!(
        rows_all(edge_rows, |r| r["cls"] == "DROPPED"
            && str_of(&r["cells"][1]).starts_with("ops/ops-toolbox")
            && str_of(&r["cells"][2]).starts_with("payments/postgres")),
        "the edge's flows only: {edge_rows}"
    );
    assert!(
        rows_all(&result["node_rows"], |r| str_of(&r["cells"][1])
            .contains("postgres")
            || str_of(&r["cells"][2]).contains("postgres")),
        "postgres' flows only: {}",
        result["node_rows"]
    );
    assert!(
        rows_all(&result["dropped_rows"], |r| r["cls"] == "DROPPED"),
        "dropped flows only: {}",
        result["dropped_rows"]
    );
    assert!(
        result["all_rows"].as_u64() > result["dropped_rows"].as_array().map(|a| a.len() as u64)
    );

    let pause = &result["pause"];
    assert_eq!(
        pause["before"], pause["during"],
        "nothing changes while paused: {pause}"
    );
    assert!(
        pause["pending"].as_u64() > Some(0),
        "flows arrived meanwhile: {pause}"
    );
    assert!(
        pause["after"].as_u64() > pause["before"].as_u64(),
        "resume applies them: {pause}"
    );

    for shot in result["screenshots"].as_array().expect("screenshots") {
        let path = str_of(shot);
        assert!(
            std::fs::metadata(path).is_ok_and(|m| m.len() > 10_000),
            "{path}"
        );
        println!("screenshot: {path}");
    }
    // Bad input is named.
    let bad = Command::new("curl")
        .args([
            "-s",
            &format!("{}api/stream?namespace=Bad/ns", relay.ui_url),
        ])
        .output()
        .expect("curl");
    let bad = String::from_utf8_lossy(&bad.stdout);
    assert!(
        bad.contains("\\\"Bad/ns\\\" is not a Kubernetes namespace name"),
        "{bad}"
    );
    drop(relay);

    // `[plugins.observe.ui] listen` on node-2's agent: the same page over its own flows.
    let agent_ui = |path: &str| {
        let out = Command::new("nsenter")
            .arg(format!(
                "--net=/run/netns/{}",
                str_of(&node(&sandbox, "node-2")["netns"])
            ))
            .args([
                "curl",
                "-sN",
                "-m",
                "2",
                &format!("http://127.0.0.1:12000{path}"),
            ])
            .output()
            .expect("curl in node-2");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(agent_ui("/").contains("Porin <span>Flow UI</span>"));
    assert!(agent_ui("/api/namespaces").contains("\"payments\""));
    let stream = agent_ui("/api/stream?namespace=payments");
    assert!(
        stream.contains("event: map") && stream.contains("payments/postgres"),
        "{stream}"
    );
    sandbox.down_and_check();
}

#[test]
fn two_hundred_workloads_at_two_thousand_flows_per_second() {
    const WORKLOADS: usize = 200;
    const RATE: u64 = 2_000;
    let _one = BROWSER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("synthetic.sock");
    {
        let _entered = runtime.enter();
        synthetic::start(&socket, WORKLOADS, RATE);
    }
    let peer = format!("synthetic=unix://{}", socket.display());
    let relay = Relay::start(porin_bin(), None, &["--peer", &peer]);
    let params = json!({
        "url": relay.ui_url,
        "out": artifacts_dir().display().to_string(),
        "namespace": synthetic::NAMESPACE,
        "workloads": WORKLOADS,
        "seconds": 10,
    });
    let result = driver("scale", &[&params.to_string()]);
    println!("scale result: {result}");
    assert!(
        result["nodes"].as_u64() >= Some(WORKLOADS as u64),
        "{result}"
    );
    assert!(
        result["edges"].as_u64() >= Some(3 * WORKLOADS as u64),
        "{result}"
    );
    // The page keeps drawing at the display's rate and never stalls (the p95 is
    // reported: on a loaded 2-core CI machine it is not the page's alone).
    let p50 = result["frame_ms_p50"].as_f64().expect("frames");
    assert!(p50 < 40.0, "frame time p50 {p50} ms: {result}");
    let longest = result["frame_ms_max"].as_f64().expect("frames");
    assert!(longest < 1000.0, "a frame took {longest} ms: {result}");
    let heap = result["js_heap_mb"].as_f64().expect("heap");
    assert!(heap < 100.0, "JS heap {heap} MB: {result}");
    assert!(result["new_edges"].as_u64() >= Some(5), "{result}");
    // Target: under 2 s. The median must meet it with room; the worst case is
    // reported and only bounded loosely, since CI shares its two cores.
    let median = result["flow_to_screen_ms_p50"].as_f64().expect("latency");
    assert!(
        median < 1000.0,
        "new connections took {median} ms to appear: {result}"
    );
    let worst = result["flow_to_screen_ms_max"].as_f64().expect("latency");
    assert!(
        worst < 4000.0,
        "a new connection took {worst} ms to appear: {result}"
    );
    drop(relay);
    drop(runtime);
}
