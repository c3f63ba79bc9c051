//! Helpers of the encryption end-to-end tests: a web pod on node-1 and clients on both
//! nodes, tcpdump captures, and the agents' `porin encrypt status`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{TestSandbox, str_of, wait_for};

pub const CROSS_MARKER: &str = "PORIN-CROSS-NODE-MARKER-7f3a9c";
pub const LOCAL_MARKER: &str = "PORIN-SAME-NODE-MARKER-41b2e8";
pub const WG_PORT: u16 = 51871;

pub fn manifests(www: &Path) -> String {
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
pub struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    pub fn start(netns: &str, iface: &str, file: PathBuf) -> Self {
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
    pub fn stop(mut self) -> (Vec<u8>, String) {
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

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The underlay namespace: the one holding the bridge.
pub fn underlay_netns(state: &Value) -> String {
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

pub fn node_netns(state: &Value, node: &str) -> String {
    state["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == node))
        .map(|n| str_of(&n["netns"]).to_string())
        .unwrap_or_else(|| panic!("no node {node}"))
}

/// One node's entry of `porin encrypt status -o json` (null when it has none).
pub fn node_status<'a>(all: &'a Value, node: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    all.as_array()
        .and_then(|a| a.iter().find(|s| s["node"] == node))
        .unwrap_or(&NULL)
}

/// `porin encrypt status -o json`; an agent that does not answer (e.g. restarting) has
/// an entry with only an error, and the command exits non-zero, which callers that
/// wait for a state tolerate.
pub fn status(sandbox: &TestSandbox) -> Value {
    let out = sandbox.porin(&["encrypt", "status", "-o", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// A sandbox with the web page and both clients, `agent_config` appended to every
/// node's porin.toml; returns it with the page directory (kept alive by the caller).
pub fn up(agent_config: &str) -> (TestSandbox, tempfile::TempDir) {
    let www = tempfile::tempdir().expect("www");
    std::fs::write(www.path().join("cross.txt"), CROSS_MARKER).expect("cross.txt");
    std::fs::write(www.path().join("local.txt"), LOCAL_MARKER).expect("local.txt");
    let sandbox = TestSandbox::up_with(
        &[("00-sec.yaml", &manifests(www.path()))],
        Some(agent_config),
    );
    (sandbox, www)
}

/// `porin encrypt status` once both nodes have each other as their one peer.
pub fn wait_for_peers(sandbox: &TestSandbox) -> Value {
    wait_for(Duration::from_secs(15), || {
        let s = status(sandbox);
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
            status(sandbox),
            sandbox.agent_logs()
        )
    })
}

/// `curl` from `pod` to `url` (one attempt, `seconds` at most).
pub fn fetch(sandbox: &TestSandbox, pod: &str, url: &str, seconds: u32) -> std::process::Output {
    sandbox.exec(pod, &["curl", "-sS", "-m", &seconds.to_string(), url])
}

/// `curl` from `pod` until the page at `url` holds `marker` (`timeout` at most); panics
/// with curl's error and the agents' logs otherwise.
pub fn fetch_until(sandbox: &TestSandbox, pod: &str, url: &str, marker: &str, timeout: Duration) {
    let out = sandbox.exec_until_ok(pod, &["curl", "-sS", "-m", "5", url], timeout);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(marker),
        "{pod}: fetching {url} failed: {} {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        sandbox.agent_logs()
    );
}
