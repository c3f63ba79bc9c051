//! `Sandbox::up` / `exec` / `down` with a fake agent that wires pods like a
//! simple CNI plugin. Needs root, iproute2, python3 and curl.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use porin_testbed::netns::NetNs;
use porin_testbed::sandbox::AgentError;
use porin_testbed::{AgentControl, NodeSpec, PodSpec, Process, Sandbox, SandboxOptions, manifests};

/// Stands in for `porin agent`: a sleeping process in the node, and
/// `plain_link` for endpoints.
#[derive(Default)]
struct FakeAgent {
    next_host: Mutex<u8>,
}

impl AgentControl for FakeAgent {
    fn start_agent(&self, node: &NodeSpec, config_path: &Path) -> Result<Process, AgentError> {
        assert!(
            config_path.exists(),
            "config written before the agent starts"
        );
        std::fs::create_dir_all(&node.pin_dir)?;
        let mut cmd = Command::new("sleep");
        cmd.arg("300");
        Ok(Process::spawn(
            cmd,
            Some(&node.netns),
            Some(&node.cgroup),
            &node.agent_log,
        )?)
    }

    fn add_endpoint(
        &self,
        node: &NodeSpec,
        pod: &PodSpec,
        pod_netns: &Path,
    ) -> Result<Ipv4Addr, AgentError> {
        let mut next = self.next_host.lock().map_err(|_| "poisoned")?;
        *next += 1;
        let ip = Ipv4Addr::from(u32::from(node.pod_cidr.network()) + 10 + u32::from(*next));
        let node_ns = NetNs::open(&node.netns_name)?;
        let pod_name = pod_netns
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("bad netns path")?;
        assert_eq!(pod_name, pod.netns_name);
        let pod_ns = NetNs::open(pod_name)?;
        porin_testbed::pod::plain_link(&node_ns, &pod_ns, &format!("lxc{}", *next), ip)?;
        Ok(ip)
    }
}

fn sample_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sandbox")
}

#[test]
fn manifest_reader_on_sample_directory() {
    let mut found = manifests::read_dir(&sample_dir()).expect("read manifests");
    assert_eq!(found.namespaces, ["shop"]);
    let names: Vec<_> = found
        .pods
        .iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    assert_eq!(names, ["shop/web", "default/client"]);
    assert_eq!(
        found.pods[0].command,
        ["python3", "-m", "http.server", "8080"]
    );
    assert!(found.pods[1].command.is_empty());
    manifests::assign_nodes(&mut found.pods, &["node-1".into(), "node-2".into()]).expect("assign");
    assert_eq!(found.pods[0].node_name.as_deref(), Some("node-2"));
    assert_eq!(found.pods[1].node_name.as_deref(), Some("node-1"));
}

#[test]
fn sandbox_up_exec_down() {
    assert!(nix::unistd::geteuid().is_root(), "sandbox test needs root");
    let state_dir = tempfile::tempdir().expect("tempdir");
    let opts = SandboxOptions::new(
        state_dir.path(),
        Box::new(|node: &NodeSpec| format!("[agent]\nnode_name = \"{}\"\n", node.name)),
    );
    let opts = SandboxOptions {
        prefix: "ptbsbx".to_owned(),
        ..opts
    };
    let summary = Sandbox::up(&sample_dir(), &opts, &FakeAgent::default()).expect("sandbox up");
    assert_eq!(summary.pods.len(), 2);
    assert!(
        summary
            .nodes
            .iter()
            .all(|n| n.agent_socket.is_some() && n.metrics_addr.is_some())
    );
    let web = summary
        .pods
        .iter()
        .find(|p| p.name == "web")
        .expect("web pod");
    assert_eq!(web.node, "node-2");
    let web_ip = web.ip.expect("web ip");
    let config =
        std::fs::read_to_string(state_dir.path().join("nodes/node-1/porin.toml")).expect("config");
    assert!(config.contains("node-1"));

    // The client (node-1) reaches the web pod (node-2) through `exec`.
    let url = format!("http://{web_ip}:8080/");
    let cmd = vec![
        "curl".to_owned(),
        "-sf".to_owned(),
        "-o".to_owned(),
        "/dev/null".to_owned(),
        "--max-time".to_owned(),
        "2".to_owned(),
        url,
    ];
    let start = Instant::now();
    loop {
        let status = Sandbox::exec(state_dir.path(), "default/client", &cmd).expect("exec");
        if status.success() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "curl from client to web kept failing: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        Sandbox::exec(state_dir.path(), "web", &["true".to_owned()])
            .expect("exec")
            .success()
    );

    let state = Sandbox::status(state_dir.path()).expect("status");
    let pin_dirs = state.pin_dirs.clone();
    let report = Sandbox::down(state_dir.path()).expect("down");
    assert!(report.is_clean(), "{:?}", report.errors);
    let listed = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip")
            .stdout,
    )
    .into_owned();
    for ns in &state.netns {
        assert!(!listed.contains(ns.as_str()), "{ns} left behind");
    }
    for dir in pin_dirs.iter().chain(&state.cgroups) {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    assert!(
        Sandbox::status(state_dir.path()).is_err(),
        "state file removed by down"
    );
}
