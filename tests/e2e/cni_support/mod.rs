//! Running `porin-cni` as a container runtime does: CNI_* variables, the network
//! config on stdin, the result or error JSON on stdout.

#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod containerd;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::common::{TestSandbox, str_of};

/// The plugin binary under test.
pub fn cni_bin() -> &'static str {
    env!("CARGO_BIN_EXE_porin-cni")
}

/// Porin's network config as a runtime hands it over (one entry of the conflist).
pub fn net_conf(version: &str, agent_socket: &Path) -> Value {
    json!({
        "cniVersion": version,
        "name": "porin",
        "type": "porin-cni",
        "agentSocket": agent_socket,
        "dns": {"nameservers": ["10.96.0.10"], "search": ["default.svc.cluster.local"]},
    })
}

/// One plugin call.
#[derive(Debug, Clone)]
pub struct CniCall {
    pub command: &'static str,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
}

/// What the plugin answered.
#[derive(Debug)]
pub struct CniAnswer {
    pub success: bool,
    /// stdout parsed as JSON (None when empty).
    pub json: Option<Value>,
    pub stdout: String,
    pub stderr: String,
}

impl CniAnswer {
    /// The answer of a call that must succeed.
    pub fn ok(self, what: &str) -> Option<Value> {
        assert!(
            self.success,
            "{what} failed: {}\n{}",
            self.stdout, self.stderr
        );
        self.json
    }

    /// The error JSON of a call that must fail.
    pub fn error(self, what: &str) -> Value {
        assert!(!self.success, "{what} succeeded: {}", self.stdout);
        self.json
            .unwrap_or_else(|| panic!("{what}: no error JSON on stdout: {}", self.stderr))
    }
}

impl CniCall {
    /// A call for a pod named through `K8S_POD_NAMESPACE`/`K8S_POD_NAME`, as kubelet does.
    pub fn for_pod(
        command: &'static str,
        container_id: &str,
        netns: &str,
        namespace: &str,
        pod: &str,
    ) -> Self {
        Self {
            command,
            container_id: container_id.to_string(),
            netns: netns.to_string(),
            ifname: "eth0".to_string(),
            args: format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod}"),
        }
    }

    /// The same call with another command.
    pub fn with(&self, command: &'static str) -> Self {
        Self {
            command,
            ..self.clone()
        }
    }

    /// Run the plugin with `conf` on stdin.
    pub fn run(&self, conf: &Value) -> CniAnswer {
        self.run_program(cni_bin(), None, conf)
    }

    /// Run another CNI plugin (a peer) the same way, in `netns` when given.
    pub fn run_program(&self, program: &str, netns: Option<&str>, conf: &Value) -> CniAnswer {
        run_plugin(
            program,
            netns,
            &[
                ("CNI_COMMAND", self.command),
                ("CNI_CONTAINERID", &self.container_id),
                ("CNI_NETNS", &self.netns),
                ("CNI_IFNAME", &self.ifname),
                ("CNI_ARGS", &self.args),
                ("CNI_PATH", "/usr/lib/cni"),
            ],
            conf.to_string().as_bytes(),
        )
    }
}

/// Run the plugin with exactly these variables and this stdin.
pub fn run_raw(vars: &[(&str, &str)], stdin: &[u8]) -> CniAnswer {
    run_plugin(cni_bin(), None, vars, stdin)
}

/// Run the CNI plugin `program` (inside the network namespace at `netns`, when
/// given, as a runtime in that namespace would) with these variables and stdin.
pub fn run_plugin(
    program: &str,
    netns: Option<&str>,
    vars: &[(&str, &str)],
    stdin: &[u8],
) -> CniAnswer {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={ns}")).arg(program);
            c
        }
        None => Command::new(program),
    };
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn porin-cni");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    let out = child.wait_with_output().expect("porin-cni output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    CniAnswer {
        success: out.status.success(),
        json: (!stdout.trim().is_empty()).then(|| {
            serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("porin-cni printed no JSON ({e}): {stdout}"))
        }),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A node of the sandbox: its agent socket and network namespace path.
pub fn node(sandbox: &TestSandbox, name: &str) -> (PathBuf, String) {
    let state = sandbox.state();
    let rec = state["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == name))
        .unwrap_or_else(|| panic!("no node {name}"))
        .clone();
    (
        PathBuf::from(str_of(&rec["agent_socket"])),
        format!("/run/netns/{}", str_of(&rec["netns"])),
    )
}

/// `ip ARGS` in the namespace at `netns` (a path).
pub fn ip_in(netns: &str, args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .arg("ip")
        .args(args)
        .output()
        .expect("nsenter ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The agent's endpoints (`GET /v1/endpoints`) through the CLI.
pub fn endpoints(sandbox: &TestSandbox, socket: &Path) -> Vec<Value> {
    let socket = socket.display().to_string();
    let value = sandbox.porin_json(&["endpoint", "list", "--socket", &socket]);
    value
        .as_array()
        .expect("endpoint list is an array")
        .iter()
        .map(|e| {
            if e.get("endpoint").is_some() {
                e["endpoint"].clone()
            } else {
                e.clone()
            }
        })
        .collect()
}
