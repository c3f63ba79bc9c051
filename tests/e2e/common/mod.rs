//! Helpers for end-to-end tests: a real sandbox (real agents, real eBPF programs,
//! real namespaces) driven through the `porin` binary, as a user would.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod dns;
pub mod socket_probe;
pub mod wireguard;

/// The porin binary under test.
pub fn porin_bin() -> &'static str {
    env!("CARGO_BIN_EXE_porin")
}

/// A sandbox that is brought down when dropped, in its own state directory.
pub struct TestSandbox {
    pub state_dir: tempfile::TempDir,
    pub manifests: tempfile::TempDir,
    up: bool,
}

impl TestSandbox {
    /// Write `files` (name, YAML) into a manifest directory and bring a sandbox up.
    pub fn up(files: &[(&str, &str)]) -> Self {
        Self::up_with(files, None)
    }

    /// Like [`TestSandbox::up`], with `agent_config` appended to every node's porin.toml
    /// (`porin sandbox up --agent-config`), e.g. to enable a plugin.
    pub fn up_with(files: &[(&str, &str)], agent_config: Option<&str>) -> Self {
        Self::up_with_nodes(files, agent_config, 2)
    }

    /// Like [`TestSandbox::up_with`], with `nodes` nodes (`porin sandbox up --nodes`).
    pub fn up_with_nodes(files: &[(&str, &str)], agent_config: Option<&str>, nodes: usize) -> Self {
        Self::up_with_args(files, agent_config, nodes, &[])
    }

    /// Like [`TestSandbox::up_with_nodes`], with more `sandbox up` switches (`--ipv6`).
    pub fn up_with_args(
        files: &[(&str, &str)],
        agent_config: Option<&str>,
        nodes: usize,
        extra_args: &[&str],
    ) -> Self {
        assert_root();
        let state_dir = tempfile::Builder::new()
            .prefix("porin-e2e-")
            .tempdir()
            .expect("state dir");
        let manifests = tempfile::tempdir().expect("manifest dir");
        for (name, text) in files {
            std::fs::write(manifests.path().join(name), text).expect("write manifest");
        }
        let mut sandbox = Self {
            state_dir,
            manifests,
            up: false,
        };
        let dir = sandbox.manifests.path().display().to_string();
        let mut args = vec![
            "sandbox".to_string(),
            "up".to_string(),
            dir,
            "--nodes".to_string(),
            nodes.to_string(),
        ];
        args.extend(extra_args.iter().map(|a| (*a).to_string()));
        if let Some(text) = agent_config {
            let path = sandbox.state_dir.path().join("extra-agent-config.toml");
            std::fs::write(&path, text).expect("write agent config");
            args.extend(["--agent-config".to_string(), path.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = sandbox.porin(&args);
        assert!(
            out.status.success(),
            "sandbox up failed:\n{}\n{}\nagent logs:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            sandbox.agent_logs()
        );
        sandbox.up = true;
        sandbox
    }

    /// Run `porin ARGS` against this sandbox.
    pub fn porin(&self, args: &[&str]) -> Output {
        Command::new(porin_bin())
            .args(args)
            .env("PORIN_SANDBOX_DIR", self.state_dir.path())
            .output()
            .expect("run porin")
    }

    /// Run `porin ARGS -o json` and parse the output.
    pub fn porin_json(&self, args: &[&str]) -> Value {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.porin(&all);
        assert!(
            out.status.success(),
            "porin {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "porin {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `porin observe --last N -o json` as parsed flows.
    pub fn flows(&self, last: usize) -> Vec<Value> {
        self.observe(&["--last", &last.to_string()])
    }

    /// `porin observe ARGS -o json` (filter flags, `--last N`) as parsed flows.
    pub fn observe(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["observe", "-o", "json"];
        all.extend_from_slice(args);
        let out = self.porin(&all);
        assert!(
            out.status.success(),
            "porin {all:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("flow JSON")["flow"].clone())
            .collect()
    }

    /// Run a command in a pod; returns its output.
    pub fn exec(&self, pod: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["sandbox", "exec", pod, "--"];
        args.extend_from_slice(cmd);
        self.porin(&args)
    }

    /// Run a command in the external client's namespace (outside the cluster).
    pub fn exec_external(&self, cmd: &[&str]) -> Output {
        let mut args = vec!["sandbox", "exec", "--external", "--"];
        args.extend_from_slice(cmd);
        self.porin(&args)
    }

    /// Run a command in a pod until it succeeds (servers take a moment to start).
    pub fn exec_until_ok(&self, pod: &str, cmd: &[&str], timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.exec(pod, cmd);
            if out.status.success() || Instant::now() > deadline {
                return out;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The sandbox's endpoints: (namespace/pod) -> endpoint JSON with its node.
    pub fn endpoints(&self) -> Vec<Value> {
        self.porin_json(&["endpoint", "list"])
            .as_array()
            .expect("endpoint list is an array")
            .clone()
    }

    /// One endpoint by `namespace/pod`.
    pub fn endpoint(&self, key: &str) -> Value {
        self.endpoints()
            .into_iter()
            .find(|e| {
                let ep = &e["endpoint"];
                format!("{}/{}", str_of(&ep["namespace"]), str_of(&ep["pod"])) == key
            })
            .unwrap_or_else(|| panic!("no endpoint {key}"))
    }

    /// The recorded sandbox state (state.json).
    pub fn state(&self) -> Value {
        let text =
            std::fs::read_to_string(self.state_dir.path().join("state.json")).expect("state.json");
        serde_json::from_str(&text).expect("state JSON")
    }

    /// Scrape a node's agent metrics (inside the node's namespace).
    pub fn metrics(&self, node: &str) -> String {
        self.scrape(node, None)
    }

    /// Scrape a node's Hubble metrics (`:9965` on the agent metrics' host).
    pub fn hubble_metrics(&self, node: &str) -> String {
        self.scrape(node, Some(9965))
    }

    /// Scrape the agent metrics' address of `node`, or another port on its host.
    fn scrape(&self, node: &str, port: Option<u16>) -> String {
        let state = self.state();
        let rec = state["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["name"] == node))
            .unwrap_or_else(|| panic!("no node {node}"))
            .clone();
        let netns = format!("--net=/run/netns/{}", str_of(&rec["netns"]));
        let addr = str_of(&rec["metrics_addr"]);
        let addr = match (port, addr.rsplit_once(':')) {
            (None, _) => addr.to_string(),
            (Some(port), Some(("0.0.0.0", _)) | None) => format!("127.0.0.1:{port}"),
            (Some(port), Some((host, _))) => format!("{host}:{port}"),
        };
        let url = format!("http://{addr}/metrics");
        let out = Command::new("nsenter")
            .args([netns.as_str(), "curl", "-s", "-m", "3", url.as_str()])
            .output()
            .expect("curl metrics");
        assert!(out.status.success(), "scraping {url} failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The agents' logs, for failure messages.
    pub fn agent_logs(&self) -> String {
        let mut all = String::new();
        if let Ok(entries) = std::fs::read_dir(self.state_dir.path().join("logs")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("agent_") {
                    let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(20).collect();
                    all.push_str(&format!("== {name}\n"));
                    for line in tail.into_iter().rev() {
                        all.push_str(line);
                        all.push('\n');
                    }
                }
            }
        }
        all
    }

    /// Bring the sandbox down now and check nothing is left.
    pub fn down_and_check(mut self) {
        let state = self.state();
        let out = self.porin(&["sandbox", "down"]);
        self.up = false;
        assert!(
            out.status.success(),
            "sandbox down: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let netns = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns");
        let netns = String::from_utf8_lossy(&netns.stdout);
        for ns in state["netns"].as_array().into_iter().flatten() {
            let ns = str_of(ns);
            assert!(
                !netns
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(ns)),
                "namespace {ns} left behind"
            );
        }
        for dir in state["pin_dirs"].as_array().into_iter().flatten() {
            assert!(
                !Path::new(str_of(dir)).exists(),
                "pin dir {dir} left behind"
            );
        }
        for dir in state["cgroups"].as_array().into_iter().flatten() {
            assert!(!Path::new(str_of(dir)).exists(), "cgroup {dir} left behind");
        }
        for pid in state["pids"].as_array().into_iter().flatten() {
            let pid = pid["pid"].as_u64().expect("pid");
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let alive = !stat.is_empty()
                && !stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z');
            assert!(!alive, "process {pid} left running");
        }
        assert!(
            !self.state_dir.path().join("state.json").exists(),
            "state file left behind"
        );
    }
}

impl Drop for TestSandbox {
    fn drop(&mut self) {
        if self.up {
            let _ = self.porin(&["sandbox", "down"]);
        }
    }
}

/// A JSON string value as &str ("" otherwise).
pub fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// Privileged tests must run (CI runs as root); fail loudly instead of skipping.
pub fn assert_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "end-to-end tests make namespaces and load eBPF programs: run them as root (sudo make test)"
    );
}

/// Poll `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of a metric line `name{labels} value` whose text contains all `parts`.
pub fn metric_value(text: &str, name: &str, parts: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .next()
}

/// A path inside the test's manifest directory.
pub fn manifest_path(sandbox: &TestSandbox, name: &str) -> PathBuf {
    sandbox.manifests.path().join(name)
}

/// A `shop/<name>` pod labelled `app: web` on `node`, serving its document root
/// `<www>/<name>` on the named port `http` (8080), so every answer names its backend.
pub fn named_backend_pod(www: &Path, name: &str, node: &str) -> String {
    let www = www.display();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: shop
  labels:
    app: web
spec:
  nodeName: {node}
  containers:
    - name: web
      image: ignored
      command: ["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0", "--directory", "{www}/{name}"]
      ports:
        - name: http
          containerPort: 8080
---
"#
    )
}

/// Document roots for [`named_backend_pod`]: one directory per name whose index is the name.
pub fn document_roots(names: &[&str]) -> tempfile::TempDir {
    let www = tempfile::tempdir().expect("www dir");
    for name in names {
        let dir = www.path().join(name);
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("index.html"), name).expect("index.html");
    }
    www
}

/// Namespace `shop` with [`named_backend_pod`]s `web-1` (node-1) and `web-2` (node-2)
/// and a `shop/client` pod on node-1: the LB tests' cast, before their Services.
pub fn shop_with_web_backends(www: &Path) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
{web1}{web2}apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: shop
  labels:
    app: client
spec:
  nodeName: node-1
  containers:
    - name: c
      image: ignored
      command: ["sleep", "infinity"]
---
"#,
        web1 = named_backend_pod(www, "web-1", "node-1"),
        web2 = named_backend_pod(www, "web-2", "node-2"),
    )
}

/// A pod manifest: `namespace/name` labelled `app: <app>` on `node`, running `command`
/// (a JSON array), or `sleep infinity`.
pub fn pod_yaml(
    namespace: &str,
    name: &str,
    app: &str,
    node: &str,
    command: Option<&str>,
) -> String {
    let command = command.unwrap_or(r#"["sleep", "infinity"]"#);
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}, labels: {{app: {app}}}}}\n\
         spec:\n  nodeName: {node}\n  containers: [{{name: c, image: ignored, command: {command}}}]\n---\n"
    )
}

/// `shop/web` (python http.server on 8080) on node-1 and `shop/client` on node-2.
pub const SHOP_WEB_AND_CLIENT: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
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
  namespace: shop
  labels:
    app: client
spec:
  nodeName: node-2
  containers:
    - name: c
      image: ignored
      command: ["sleep", "infinity"]
"#;

/// `porin service list` of `node` as (frontend, type) pairs.
pub fn service_kinds(
    sandbox: &TestSandbox,
    node: &str,
) -> std::collections::BTreeSet<(String, String)> {
    let listed = sandbox.porin_json(&["service", "list", "--node", node]);
    listed[0]["services"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                str_of(&s["frontend"]).to_string(),
                str_of(&s["type"]).to_string(),
            )
        })
        .collect()
}

/// The body of `curl URL` from `pod` (one new connection), or None if it failed.
pub fn curl_body(sandbox: &TestSandbox, pod: &str, url: &str) -> Option<String> {
    let out = sandbox.exec(pod, &["curl", "-s", "-m", "2", url]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Calls `get` (one request; the answer names a backend) until `want` distinct backends
/// have answered or `timeout` passes, ignoring failures meanwhile: backends start
/// asynchronously, and one whose server does not listen yet refuses. Returns the answers.
pub fn warm_up(
    timeout: Duration,
    want: usize,
    mut get: impl FnMut() -> Option<String>,
) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + timeout;
    while seen.len() < want && std::time::Instant::now() < deadline {
        match get() {
            Some(body) => {
                seen.insert(body);
            }
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    seen
}

/// `GET http://WEB:8080/` from `shop/client` (of [`SHOP_WEB_AND_CLIENT`]), retried while
/// the server starts.
pub fn fetch_from_client(sandbox: &TestSandbox, web: &str) {
    let url = format!("http://{web}:8080/");
    let get = "import urllib.request,sys\nurllib.request.urlopen(sys.argv[1], timeout=3).read()";
    let out = sandbox.exec_until_ok(
        "shop/client",
        &["python3", "-c", get, &url],
        Duration::from_secs(10),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
