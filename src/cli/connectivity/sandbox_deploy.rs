//! `--sandbox`: the test's own sandbox, brought up from the test workloads and brought
//! down at the end (also when the run fails or is interrupted by an error).
//!
//! The sandbox cannot add pods to a running sandbox, so the test never touches the
//! user's: it makes its own (namespace prefix `porin-cct`, state in its own directory),
//! which coexists with one started by `porin sandbox up`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use porin_core::api::AgentClient;
use porin_testbed::placement;
use porin_testbed::process::Process;
use porin_testbed::sandbox::{NodeSpec, Sandbox, SandboxOptions};
use porin_testbed::state::State;

use super::workloads::{self, ALLOWED_WORLD_IP, REFUSED_WORLD_IP, WORLD_PORT};
use crate::cli::discover::{AgentTarget, DEFAULT_SANDBOX_DIR};
use crate::cli::sandbox::{SandboxAgents, agent_config, wait_for_convergence, wireguard_sockets};

/// Every plugin on: what the suite runs against unless `--agent-config` says otherwise.
pub const DEFAULT_PLUGINS: &str = "[plugins.lb]\nenabled = true\n\n[plugins.policy]\nenabled = true\n\n[plugins.policy.l7_proxy]\n\n[plugins.encryption]\nenabled = true\n";

/// The test sandbox's state directory is `/var/run/porin/<prefix><pid of the run>`.
const STATE_DIR_PREFIX: &str = "connectivity-test-";

/// Settings of the test sandbox.
pub struct SandboxSettings {
    /// porin.toml plugin sections for every agent (default: [`DEFAULT_PLUGINS`]).
    pub plugins: String,
    /// Extra manifests deployed with the test workloads (e.g. the cluster's own
    /// clusterwide policies).
    pub extra_manifests: Option<PathBuf>,
}

/// A running test sandbox; dropping it brings it down.
pub struct TestSandbox {
    pub state_dir: PathBuf,
    pub manifests: PathBuf,
    pub targets: Vec<AgentTarget>,
    pub state: State,
    /// Each node's porin.toml as written.
    pub configs: Vec<(String, String)>,
    world: Option<Process>,
    up: bool,
}

impl TestSandbox {
    /// Brings the sandbox up with the test workloads and starts the world stand-in.
    pub fn up(settings: &SandboxSettings) -> Result<Self> {
        crate::cli::sandbox::require_root()?;
        let base = Path::new(DEFAULT_SANDBOX_DIR)
            .parent()
            .unwrap_or(Path::new("/var/run/porin"));
        remove_abandoned(base);
        let state_dir = base.join(format!("{STATE_DIR_PREFIX}{}", std::process::id()));
        let manifests = state_dir.join("manifests");
        let www = state_dir.join("www");
        std::fs::create_dir_all(&manifests)
            .with_context(|| format!("creating {}", manifests.display()))?;
        workloads::write_document_roots(&www)
            .with_context(|| format!("writing the echo servers' pages in {}", www.display()))?;
        std::fs::write(
            manifests.join("00-connectivity-test.yaml"),
            workloads::base_manifests(&www),
        )
        .context("writing the test workloads")?;
        if let Some(extra) = &settings.extra_manifests {
            copy_manifests(extra, &manifests)?;
        }
        let mut sandbox = Self {
            state_dir: state_dir.clone(),
            manifests: manifests.clone(),
            targets: Vec::new(),
            state: State::default(),
            configs: Vec::new(),
            world: None,
            up: false,
        };
        let runtime_dir = state_dir.join("cluster");
        std::fs::create_dir_all(&runtime_dir)?;
        let plugins = settings.plugins.clone();
        let writer_runtime = runtime_dir.clone();
        let mut options = SandboxOptions::new(
            &state_dir,
            Box::new(move |node: &NodeSpec| agent_config(node, &writer_runtime, &plugins)),
        );
        options.prefix = "porin-cct".to_string();
        let control = SandboxAgents::new()?;
        let summary = Sandbox::up(&manifests, &options, &control).with_context(|| {
            format!(
                "bringing up the test sandbox (logs in {})",
                state_dir.join("logs").display()
            )
        })?;
        sandbox.up = true;
        wait_for_convergence(&control, &summary)?;
        sandbox.state = Sandbox::status(&state_dir)?;
        for node in &summary.nodes {
            let Some(socket) = node.agent_socket.clone() else {
                continue;
            };
            sandbox.targets.push(AgentTarget {
                node: node.name.clone(),
                hubble_socket: socket.with_file_name(porin_observe::HUBBLE_SOCKET_NAME),
                socket,
                netns: Some(PathBuf::from("/run/netns").join(&node.netns)),
                metrics_address: node.metrics_addr.clone(),
            });
            if let Some(path) = &node.config_path {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                sandbox.configs.push((node.name.clone(), text));
            }
        }
        sandbox.world = Some(sandbox.start_world()?);
        sandbox.wait_ready()?;
        Ok(sandbox)
    }

    /// Waits until the servers are up, each asked from inside its own namespace (so no
    /// policy, the user's extra ones included, is in the way): the echo servers, the DNS
    /// server and the world stand-in. A scenario then fails for what it tests, not for a
    /// server still starting.
    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let echo = format!("http://127.0.0.1:{}/", workloads::ECHO_PORT);
        let world = format!("http://127.0.0.1:{WORLD_PORT}/");
        let curl = |url: &str| {
            vec!["curl", "-sf", "-o", "/dev/null", "-m", "1"]
                .into_iter()
                .map(str::to_string)
                .chain([url.to_string()])
                .collect::<Vec<String>>()
        };
        let dig: Vec<String> = ["dig", "+short", "+time=1", "+tries=1", "@127.0.0.1"]
            .into_iter()
            .chain([workloads::ALLOWED_NAME])
            .map(str::to_string)
            .collect();
        let checks: [(&str, Option<&str>, Vec<String>); 4] = [
            ("echo-same-node", Some("echo-same-node"), curl(&echo)),
            ("echo-other-node", Some("echo-other-node"), curl(&echo)),
            ("dns", Some("dns"), dig),
            ("the world stand-in", None, curl(&world)),
        ];
        for (what, pod, command) in &checks {
            let args: Vec<&str> = command.iter().map(String::as_str).collect();
            loop {
                let out = match pod {
                    Some(pod) => self.exec(pod, &args)?,
                    None => self.exec_external(&args)?,
                };
                let answered = if *what == "dns" {
                    String::from_utf8_lossy(&out.stdout).contains(ALLOWED_WORLD_IP)
                } else {
                    out.status.success()
                };
                if answered {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{what} is not serving after 20s; logs in {}",
                        self.state_dir.join("logs").display()
                    );
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(())
    }

    /// The pod's IPv4 address.
    pub fn pod_ip(&self, pod: &str) -> Result<Ipv4Addr> {
        self.state
            .pods
            .iter()
            .find(|p| p.namespace == workloads::NAMESPACE && p.name == pod)
            .and_then(|p| p.ip)
            .with_context(|| format!("no address for pod {pod} in the test sandbox"))
    }

    /// A node's address on the underlay.
    pub fn node_ip(&self, node: &str) -> Result<Ipv4Addr> {
        self.state
            .nodes
            .iter()
            .find(|n| n.name == node)
            .and_then(|n| n.underlay_ip)
            .with_context(|| format!("no node {node} in the test sandbox"))
    }

    /// Runs `args` in a test pod (its namespace and cgroup) and returns its output.
    pub fn exec(&self, pod: &str, args: &[&str]) -> Result<Output> {
        let record = self
            .state
            .pods
            .iter()
            .find(|p| p.namespace == workloads::NAMESPACE && p.name == pod)
            .with_context(|| format!("no pod {pod} in the test sandbox"))?;
        let netns = Path::new("/run/netns").join(&record.netns);
        run_in(&netns, record.cgroup.as_deref(), args)
    }

    /// Runs `args` on the external client (outside the cluster, on the underlay).
    pub fn exec_external(&self, args: &[&str]) -> Result<Output> {
        run_in(&self.netns_path("-external")?, None, args)
    }

    /// The namespace of the underlay bridge (where a capture sees what crosses nodes).
    pub fn underlay_netns(&self) -> Result<PathBuf> {
        self.netns_path("-underlay")
    }

    fn netns_path(&self, suffix: &str) -> Result<PathBuf> {
        let name = self
            .state
            .netns
            .iter()
            .find(|n| n.ends_with(suffix))
            .with_context(|| format!("the test sandbox has no *{suffix} namespace"))?;
        Ok(Path::new("/run/netns").join(name))
    }

    /// Writes a policy manifest into the agents' manifest directory.
    pub fn apply(&self, name: &str, yaml: &str) -> Result<()> {
        let path = self.manifests.join(format!("50-{name}.yaml"));
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))
    }

    /// Removes a manifest written by [`TestSandbox::apply`].
    pub fn remove(&self, name: &str) -> Result<()> {
        let path = self.manifests.join(format!("50-{name}.yaml"));
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
    }

    /// Waits until every agent running the policy plugin lists (or no longer lists)
    /// these policies.
    pub async fn wait_for_policies(&self, names: &[&str], present: bool) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        for target in &self.targets {
            let client = AgentClient::new(&target.socket);
            loop {
                let status = client.plugin_status("policy").await.unwrap_or_default();
                let listed: Vec<String> = status["policies"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["name"].as_str().map(str::to_string))
                    .collect();
                if names
                    .iter()
                    .all(|n| listed.iter().any(|l| l == n) == present)
                {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "the agent of {} did not {} policies {} within 10s (it lists: {})",
                        target.node,
                        if present { "load" } else { "unload" },
                        names.join(", "),
                        listed.join(", ")
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // The maps are written right after the policy is computed.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    }

    /// The world stand-in: two addresses on the external namespace (what the test's DNS
    /// names resolve to), routes back to the pods, and a web server.
    fn start_world(&self) -> Result<Process> {
        for ip in [ALLOWED_WORLD_IP, REFUSED_WORLD_IP] {
            let cidr = format!("{ip}/24");
            checked(self.exec_external(&["ip", "addr", "add", &cidr, "dev", "ul0"])?)?;
        }
        for node in &self.state.nodes {
            if let (Some(cidr), Some(via)) = (node.pod_cidr, node.underlay_ip) {
                let cidr = cidr.to_string();
                let via = via.to_string();
                checked(self.exec_external(&["ip", "route", "replace", &cidr, "via", &via])?)?;
            }
        }
        let mut cmd = Command::new("python3");
        cmd.args([
            "-m",
            "http.server",
            &WORLD_PORT.to_string(),
            "--bind",
            "0.0.0.0",
            "--directory",
        ])
        .arg(self.state_dir.join("www").join("world"));
        let netns = self.netns_path("-external")?;
        let log = self.state_dir.join("logs").join("world.log");
        let process = Process::spawn(cmd, Some(&netns), None, &log)?;
        // Recorded like the pods, so `down` after a crash stops it too.
        porin_testbed::state::StateFile::open_or_create(&Sandbox::state_file(&self.state_dir))?
            .record_pid(process.pid(), "connectivity test world server")?;
        Ok(process)
    }

    /// Brings the sandbox down; returns the cleanup problems.
    pub fn down(mut self) -> Vec<String> {
        self.teardown()
    }

    fn teardown(&mut self) -> Vec<String> {
        if !self.up {
            return Vec::new();
        }
        self.up = false;
        self.world.take();
        let sockets = wireguard_sockets(&self.state_dir);
        let mut problems = Vec::new();
        match Sandbox::down(&self.state_dir) {
            Ok(report) => problems.extend(report.errors.iter().map(ToString::to_string)),
            Err(e) => problems.push(e.to_string()),
        }
        for socket in sockets {
            let _ = std::fs::remove_file(socket);
        }
        if let Err(e) = std::fs::remove_dir_all(&self.state_dir) {
            problems.push(format!("removing {}: {e}", self.state_dir.display()));
        }
        problems
    }
}

impl Drop for TestSandbox {
    fn drop(&mut self) {
        for problem in self.teardown() {
            tracing::warn!(%problem, "cleaning up the connectivity test sandbox");
        }
    }
}

/// Brings down the sandboxes of earlier runs that were interrupted (their process is
/// gone), so an interrupted run leaves nothing behind for long.
fn remove_abandoned(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(STATE_DIR_PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = entry.path();
        tracing::info!(dir = %dir.display(), "removing the sandbox of an interrupted connectivity test");
        let sockets = wireguard_sockets(&dir);
        if let Err(e) = Sandbox::down(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an abandoned test sandbox");
            continue;
        }
        for socket in sockets {
            let _ = std::fs::remove_file(socket);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn run_in(netns: &Path, cgroup: Option<&Path>, args: &[&str]) -> Result<Output> {
    let (program, rest) = args.split_first().context("empty command")?;
    let mut cmd = Command::new(program);
    cmd.args(rest);
    placement::place(&mut cmd, Some(netns), cgroup)?;
    cmd.output()
        .with_context(|| format!("running `{}`", args.join(" ")))
}

fn checked(out: Output) -> Result<()> {
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn copy_manifests(from: &Path, to: &Path) -> Result<()> {
    let entries = std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml")
            && let Some(name) = path.file_name()
        {
            let target = to.join(format!("10-extra-{}", name.to_string_lossy()));
            std::fs::copy(&path, &target).with_context(|| format!("copying {}", path.display()))?;
        }
    }
    Ok(())
}
