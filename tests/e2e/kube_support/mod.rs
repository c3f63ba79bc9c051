//! A real agent (`porin agent`, datastore = "kubernetes") against the fake list/watch
//! API server (`core/tests/kube_api`), both in a network namespace of their own (the
//! server on a thread that entered it), so nothing touches the host's network.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use porin_core::api::AgentClient;
use porin_testbed::netns::NetNs;
use tokio_util::sync::CancellationToken;

use crate::kube_api::{FakeApi, Server};

/// How long the agent may take to answer its API.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves `api` from a thread inside `netns`; returns the port and a stop token.
pub fn serve_in(netns: &NetNs, api: FakeApi) -> (u16, CancellationToken) {
    let (tx, rx) = mpsc::channel();
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let path = netns.path().to_owned();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns file");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let server = Server::start(api.clone(), 0).await;
            tx.send(server.port).expect("send port");
            stopped.cancelled().await;
            server.stop(&api);
        });
    });
    (
        rx.recv_timeout(Duration::from_secs(10))
            .expect("server port"),
        stop,
    )
}

pub struct Agent(pub Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent's bpffs pin directory, removed even when the test fails.
pub struct PinDir(String);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A running agent on `api`, with what must live as long as it.
pub struct KubeAgent {
    pub agent: Agent,
    pub client: AgentClient,
    pub dir: tempfile::TempDir,
    stop_server: CancellationToken,
    _pins: PinDir,
    _netns: NetNs,
}

impl Drop for KubeAgent {
    fn drop(&mut self) {
        let _ = self.agent.0.kill();
        let _ = self.agent.0.wait();
        self.stop_server.cancel();
    }
}

impl KubeAgent {
    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }
}

/// Starts the fake API server and an agent named `node` on it with the lb, policy and
/// observe plugins; returns once the agent answers.
pub async fn start(prefix: &str, node: &str, api: FakeApi) -> KubeAgent {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (CI runs as root)"
    );
    let name = format!("{prefix}-{}", std::process::id());
    let netns = NetNs::create(&name).expect("netns");
    netns.ip(&["link", "set", "lo", "up"]).expect("lo up");
    let (port, stop_server) = serve_in(&netns, api.clone());
    let dir = tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .tempdir()
        .expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    write(
        &kubeconfig,
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"http://127.0.0.1:{port}\"}}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: fake}}\ncurrent-context: fake\n"
        ),
    );
    let pin_root = format!("/sys/fs/bpf/{name}");
    let pins = PinDir(pin_root.clone());
    let run_dir: PathBuf = dir.path().join("run");
    let config = dir.path().join("porin.toml");
    write(
        &config,
        &format!(
            r#"[agent]
node_name = "{node}"
datastore = "kubernetes"
run_dir = "{run}"
state_dir = "{state}"
pin_root = "{pin_root}"
metrics_address = "127.0.0.1:19962"
pod_cidr = "10.250.0.0/24"
node_ip = "127.0.0.1"

[plugins.lb]
enabled = true
socket_lb = false
nodeport = false

[plugins.policy]
enabled = true

[plugins.observe]
enabled = true
"#,
            run = run_dir.display(),
            state = dir.path().join("state").display(),
        ),
    );
    let log = std::fs::File::create(dir.path().join("agent.log")).expect("log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_porin"));
    command
        .args(["agent", "--config"])
        .arg(&config)
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::null())
        .stderr(log);
    let started = Instant::now();
    let agent = Agent(netns.spawn(command).expect("spawn agent"));
    let client = AgentClient::new(run_dir.join("agent.sock"));
    while client.plugin_status("lb").await.is_err() {
        assert!(
            started.elapsed() < START_TIMEOUT,
            "the agent never answered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    KubeAgent {
        agent,
        client,
        dir,
        stop_server,
        _pins: pins,
        _netns: netns,
    }
}
