//! End to end: Hubble metrics on `:9965` from real pod traffic, scraped by a
//! real Prometheus (Debian's `prometheus`) running in node-1's network
//! namespace together with the agent metrics on `:9962`, queried over
//! Prometheus' HTTP API.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{TestSandbox, str_of, wait_for};
use serde_json::Value;

const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: Namespace
metadata:
  name: tools
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  labels:
    app: web
spec:
  nodeName: node-1
  containers:
    - name: web
      image: ignored
      command: ["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0"]
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: tools
  labels:
    app: client
spec:
  nodeName: node-1
  containers:
    - name: c
      image: ignored
      command: ["sleep", "infinity"]
"#;

const OBSERVE: &str = r#"metrics = ["flow", "drop", "tcp", "port-distribution", "httpV2:exemplars=true;labelsContext=source_namespace,destination_namespace"]
"#;

/// A Prometheus server in a network namespace, killed on drop.
struct Prometheus {
    child: Child,
    netns: String,
    port: u16,
    _storage: tempfile::TempDir,
}

impl Prometheus {
    /// Start Prometheus in `netns` scraping `targets` (job, host:port) every second.
    fn start(netns: &str, targets: &[(&str, String)]) -> Self {
        let storage = tempfile::tempdir().expect("prometheus dir");
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        for (job, target) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
            ));
        }
        let config_path = storage.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let port = free_port(netns);
        let log = std::fs::File::create(storage.path().join("prometheus.log")).expect("log");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .arg("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                storage.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus (apt-get install prometheus)");
        Self {
            child,
            netns: netns.to_string(),
            port,
            _storage: storage,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._storage.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/query?query=Q`: the result vector, or None if Prometheus
    /// is not answering yet.
    fn query(&self, query: &str) -> Option<Vec<Value>> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .args(["curl", "-s", "-m", "3", "-G", "--data-urlencode"])
            .arg(format!("query={query}"))
            .arg(&url)
            .output()
            .expect("curl");
        let body: Value = serde_json::from_slice(&out.stdout).ok()?;
        assert_eq!(body["status"], "success", "query {query}: {body}");
        body["data"]["result"].as_array().cloned()
    }

    /// Wait until `query` returns a series; return the series.
    fn wait_for_series(&self, query: &str) -> Vec<Value> {
        wait_for(Duration::from_secs(30), || {
            self.query(query).filter(|r| !r.is_empty())
        })
        .unwrap_or_else(|| {
            panic!(
                "Prometheus never returned `{query}`; targets: {:?}\nprometheus log tail:\n{}",
                self.query("up"),
                tail(&self.log())
            )
        })
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A TCP port nobody listens on in `netns` (the kernel picks it).
fn free_port(netns: &str) -> u16 {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{netns}"))
        .args([
            "python3",
            "-c",
            "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])",
        ])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a port number")
}

fn value(series: &Value) -> f64 {
    str_of(&series["value"][1]).parse().expect("sample value")
}

fn label<'a>(series: &'a Value, name: &str) -> &'a str {
    str_of(&series["metric"][name])
}

#[test]
fn prometheus_scrapes_hubble_and_agent_metrics_of_real_traffic() {
    assert!(
        Path::new("/usr/bin/prometheus").exists(),
        "Debian's prometheus is required: apt-get install prometheus (make deps)"
    );
    let sandbox = TestSandbox::up_with(&[("00-pods.yaml", PODS)], Some(OBSERVE));
    let state = sandbox.state();
    let node = state["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "node-1"))
        .expect("node-1")
        .clone();
    let netns = str_of(&node["netns"]).to_string();
    let agent_addr = str_of(&node["metrics_addr"]).to_string();
    let host = match agent_addr.rsplit_once(':') {
        Some(("0.0.0.0", _)) | None => "127.0.0.1".to_string(),
        Some((h, _)) => h.to_string(),
    };

    // Traffic between pods: a TCP connection, then a malformed packet.
    let web = str_of(&sandbox.endpoint("shop/web")["endpoint"]["ipv4"]).to_string();
    let url = format!("http://{web}:8080/");
    let out = sandbox.exec_until_ok(
        "tools/client",
        &["curl", "-s", "-m", "2", "-o", "/dev/null", url.as_str()],
        Duration::from_secs(20),
    );
    assert!(
        out.status.success(),
        "curl {url}: {}\nagent logs:\n{}",
        String::from_utf8_lossy(&out.stderr),
        sandbox.agent_logs()
    );
    let send_truncated = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)\ns.sendto(b'\\x30\\x39\\x15', ('{web}', 0))"
    );
    let out = sandbox.exec("tools/client", &["python3", "-c", &send_truncated]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let prometheus = Prometheus::start(
        &netns,
        &[
            ("hubble", format!("{host}:9965")),
            ("agent", agent_addr.clone()),
        ],
    );

    // Both endpoints are up for Prometheus.
    let up = prometheus.wait_for_series("up == 1");
    let jobs: Vec<&str> = up.iter().map(|s| label(s, "job")).collect();
    let both = wait_for(Duration::from_secs(30), || {
        prometheus.query("up == 1").filter(|r| r.len() == 2)
    });
    assert!(
        both.is_some(),
        "targets up: {jobs:?}; up: {:?}",
        prometheus.query("up")
    );

    let forwarded = prometheus.wait_for_series(
        r#"hubble_flows_processed_total{job="hubble",type="Trace",verdict="FORWARDED",protocol="TCP"}"#,
    );
    assert!(forwarded.iter().all(|s| value(s) > 0.0), "{forwarded:?}");
    assert!(
        forwarded
            .iter()
            .any(|s| ["to-endpoint", "from-endpoint"].contains(&label(s, "subtype"))),
        "{forwarded:?}"
    );
    let drops_seen = prometheus
        .wait_for_series(r#"hubble_flows_processed_total{type="Drop",verdict="DROPPED"}"#);
    assert!(drops_seen.iter().all(|s| value(s) > 0.0));

    let drops =
        prometheus.wait_for_series(r#"hubble_drop_total{reason="CT_TRUNCATED_OR_INVALID_HEADER"}"#);
    assert_eq!(drops.len(), 1, "{drops:?}");
    assert!(value(&drops[0]) >= 1.0, "{drops:?}");
    assert_eq!(label(&drops[0], "protocol"), "TCP", "{drops:?}");

    let syn = prometheus.wait_for_series(r#"hubble_tcp_flags_total{flag="SYN"}"#);
    assert!(
        syn.iter()
            .all(|s| value(s) > 0.0 && label(s, "family") == "IPv4"),
        "{syn:?}"
    );
    assert!(
        !prometheus
            .wait_for_series(r#"hubble_tcp_flags_total{flag="SYN-ACK"}"#)
            .is_empty()
    );

    let ports =
        prometheus.wait_for_series(r#"hubble_port_distribution_total{protocol="TCP",port="8080"}"#);
    assert!(value(&ports[0]) > 0.0, "{ports:?}");

    // Lost events are exported per source (none lost here, but never absent).
    let lost = prometheus.wait_for_series("hubble_lost_events_total");
    let sources: Vec<&str> = lost.iter().map(|s| label(s, "source")).collect();
    for source in [
        "PERF_EVENT_RING_BUFFER",
        "OBSERVER_EVENTS_QUEUE",
        "HUBBLE_RING_BUFFER",
    ] {
        assert!(sources.contains(&source), "{sources:?}");
    }

    // A PromQL rate over the drops works as dashboards use it.
    let rate = prometheus.wait_for_series("sum(rate(hubble_drop_total[1m]))");
    assert!(value(&rate[0]) >= 0.0);

    // The agent's metrics through the same Prometheus.
    let forward = prometheus.wait_for_series(r#"cilium_forward_count_total{job="agent"}"#);
    assert!(forward.iter().any(|s| value(s) > 0.0), "{forward:?}");

    drop(prometheus);
    sandbox.down_and_check();
}
