//! `porin sandbox up|down|exec|status`: a cluster of network namespaces on this machine.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use porin_core::api::{AddEndpointRequest, AgentClient};
use porin_testbed::process::Process;
use porin_testbed::sandbox::{
    AgentControl, AgentError, NodeSpec, PodSpec, Sandbox, SandboxOptions,
};

use super::discover::{AgentTarget, sandbox_dir, sandbox_nodes_file};
use super::output::print_table;
use super::sandbox_plain::PlainAgents;

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Build a cluster from the Kubernetes YAML in DIR and start its agents and pods.
    Up {
        /// Directory of Kubernetes manifests (Namespaces, Pods, Services, policies...).
        dir: PathBuf,
        /// Number of nodes.
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// Extra porin.toml lines for every node's agent (e.g. to disable a plugin).
        #[arg(long)]
        agent_config: Option<PathBuf>,
        /// No agents and no eBPF programs: plain veths and node routes, the
        /// baseline of datapath benchmarks (`scripts/bench datapath`).
        #[arg(long, conflicts_with = "agent_config")]
        plain: bool,
        /// Dual stack: IPv6 on the underlay (fd00:ffff::N, the external client
        /// fd00:ffff::fa), an IPv6 pod CIDR per node (fd00:10:N::/64) and
        /// `enable_ipv6 = true` in every agent's configuration.
        #[arg(long, conflicts_with = "plain")]
        ipv6: bool,
    },
    /// Remove everything the sandbox made (works after a crash of `up` too).
    Down,
    /// Run a command inside a pod's network namespace and cgroup, or with `--external` in
    /// the external client's namespace (outside the cluster, on the underlay).
    Exec {
        /// Run in the external client namespace instead of a pod.
        #[arg(long, conflicts_with = "pod")]
        external: bool,
        /// `namespace/pod`, or `pod` when the name is unique.
        #[arg(required_unless_present = "external")]
        pod: Option<String>,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Show the sandbox's nodes and pods.
    Status,
    /// Stop a node's agent and start it again; traffic keeps flowing meanwhile.
    RestartAgent {
        /// The node, e.g. node-1.
        node: String,
        /// Kill the agent with SIGKILL instead of stopping it with SIGTERM.
        #[arg(long)]
        kill: bool,
    },
}

/// Run a sandbox command.
pub fn run(command: SandboxCommand) -> Result<bool> {
    let state_dir = sandbox_dir();
    require_root()?;
    match command {
        SandboxCommand::Up {
            dir,
            nodes,
            agent_config,
            plain,
            ipv6,
        } => up(
            &state_dir,
            &dir,
            UpOptions {
                nodes,
                extra: agent_config.as_deref(),
                plain,
                ipv6,
            },
        ),
        SandboxCommand::Down => {
            let wireguard_sockets = wireguard_sockets(&state_dir);
            let report = Sandbox::down(&state_dir)?;
            // The userspace WireGuard devices' control sockets live outside the nodes' namespaces.
            for socket in wireguard_sockets {
                let _ = std::fs::remove_file(socket);
            }
            let _ = std::fs::remove_file(sandbox_nodes_file());
            // What the agents published and kept: a new sandbox starts from nothing.
            for dir in ["cluster", "nodes"] {
                let _ = std::fs::remove_dir_all(state_dir.join(dir));
            }
            if report.is_clean() {
                println!("sandbox removed");
                Ok(true)
            } else {
                for e in &report.errors {
                    eprintln!("cleanup: {e}");
                }
                Ok(false)
            }
        }
        SandboxCommand::Exec {
            external,
            pod,
            command,
        } => {
            let status = match pod {
                Some(pod) if !external => Sandbox::exec(&state_dir, &pod, &command)?,
                _ => Sandbox::exec_external(&state_dir, &command)?,
            };
            Ok(status.success())
        }
        SandboxCommand::RestartAgent { node, kill } => restart_agent(&state_dir, &node, kill),
        SandboxCommand::Status => {
            let state = Sandbox::status(&state_dir)?;
            let rows: Vec<Vec<String>> = state
                .pods
                .iter()
                .map(|p| {
                    vec![
                        format!("{}/{}", p.namespace, p.name),
                        p.node.clone(),
                        p.ip.map(|i| i.to_string()).unwrap_or_default(),
                    ]
                })
                .collect();
            print_table(&["POD", "NODE", "IP"], &rows);
            Ok(true)
        }
    }
}

/// The switches of `sandbox up`.
struct UpOptions<'a> {
    nodes: usize,
    extra: Option<&'a Path>,
    plain: bool,
    ipv6: bool,
}

fn up(state_dir: &Path, dir: &Path, up: UpOptions<'_>) -> Result<bool> {
    let UpOptions {
        nodes,
        extra,
        plain,
        ipv6,
    } = up;
    let started = Instant::now();
    let manifests = std::fs::canonicalize(dir)
        .with_context(|| format!("manifest directory {}", dir.display()))?;
    let extra = match extra {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => String::new(),
    };
    let runtime_dir = state_dir.join("cluster");
    if Sandbox::state_file(state_dir).exists() {
        bail!(
            "a sandbox is already up ({}): run `porin sandbox down` first",
            Sandbox::state_file(state_dir).display()
        );
    }
    // Objects published by agents of an earlier sandbox must not leak into this one.
    let _ = std::fs::remove_dir_all(&runtime_dir);
    let _ = std::fs::remove_dir_all(state_dir.join("nodes"));
    std::fs::create_dir_all(&runtime_dir)
        .with_context(|| format!("creating {}", runtime_dir.display()))?;
    let writer_runtime = runtime_dir.clone();
    let mut options = SandboxOptions::new(
        state_dir,
        Box::new(move |node: &NodeSpec| agent_config(node, &writer_runtime, &extra)),
    );
    options.nodes = nodes;
    options.ipv6 = ipv6;
    // The agents route between nodes from each other's Node objects; without
    // agents the testbed adds the same routes.
    options.node_routes = plain;
    let summary = if plain {
        Sandbox::up(&manifests, &options, &PlainAgents::default())?
    } else {
        let control = SandboxAgents::new()?;
        let summary = Sandbox::up(&manifests, &options, &control)?;
        wait_for_convergence(&control, &summary)?;
        summary
    };

    // Without agents there is nothing for `porin status`, `observe`... to reach.
    let agents = if plain { &[][..] } else { &summary.nodes[..] };
    let targets: Vec<AgentTarget> = agents
        .iter()
        .filter_map(|n| {
            let socket = n.agent_socket.clone()?;
            Some(AgentTarget {
                node: n.name.clone(),
                hubble_socket: socket.with_file_name(porin_observe::HUBBLE_SOCKET_NAME),
                socket,
                netns: Some(PathBuf::from("/run/netns").join(&n.netns)),
                metrics_address: n.metrics_addr.clone(),
            })
        })
        .collect();
    std::fs::write(sandbox_nodes_file(), serde_json::to_vec_pretty(&targets)?)
        .with_context(|| format!("writing {}", sandbox_nodes_file().display()))?;

    let rows: Vec<Vec<String>> = summary
        .pods
        .iter()
        .map(|p| {
            vec![
                format!("{}/{}", p.namespace, p.name),
                p.node.clone(),
                p.ip.map(|i| i.to_string()).unwrap_or_default(),
            ]
        })
        .collect();
    print_table(&["POD", "NODE", "IP"], &rows);
    println!(
        "sandbox up{}: {} nodes, {} pods in {:.1}s (state in {})",
        if plain {
            " (plain: no agents, no eBPF)"
        } else {
            ""
        },
        summary.nodes.len(),
        summary.pods.len(),
        started.elapsed().as_secs_f64(),
        state_dir.display()
    );
    Ok(true)
}

/// Wait until every agent resolves every pod of the sandbox, so the first
/// connection a user makes is already attributed to the right identities.
pub(super) fn wait_for_convergence(
    control: &SandboxAgents,
    summary: &porin_testbed::sandbox::SandboxSummary,
) -> Result<()> {
    let pods = summary.pods.len();
    // Generous: on a loaded 2-core machine the agents' first reconcile can take seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in &summary.nodes {
        let Some(socket) = &node.agent_socket else {
            continue;
        };
        let client = AgentClient::new(socket).with_timeout(Duration::from_secs(2));
        loop {
            let known = control
                .runtime
                .block_on(client.status())
                .map(|s| s.cluster_endpoints)
                .unwrap_or(0);
            if known >= pods {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "agent of {} knows {known} of {pods} pods after 30s",
                    node.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// The control sockets the userspace WireGuard device would have made for the sandbox's nodes (the
/// device name derives from the node namespace's inode, known only while it exists).
pub(super) fn wireguard_sockets(state_dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let Ok(state) = Sandbox::status(state_dir) else {
        return Vec::new();
    };
    state
        .nodes
        .iter()
        .filter_map(|n| std::fs::metadata(Path::new("/run/netns").join(&n.netns)).ok())
        .map(|m| {
            Path::new("/var/run/wireguard").join(format!(
                "{}.sock",
                porin_encryption::wireguard_device_name(m.ino())
            ))
        })
        .collect()
}

/// Stop and start one node's agent; prints how long the new agent took to be ready.
fn restart_agent(state_dir: &Path, node: &str, kill: bool) -> Result<bool> {
    let state = Sandbox::status(state_dir)?;
    let record = state
        .nodes
        .iter()
        .find(|n| n.name == node)
        .with_context(|| format!("no node {node} in the sandbox"))?;
    let config = record
        .config_path
        .clone()
        .context("the node has no recorded agent config")?;
    let socket = record
        .agent_socket
        .clone()
        .context("the node has no recorded agent socket")?;
    let cgroup = record
        .cgroup
        .clone()
        .context("the node has no recorded cgroup")?;
    let netns = PathBuf::from("/run/netns").join(&record.netns);
    if let Some(pid) = record.agent_pid {
        let signal = if kill { libc::SIGKILL } else { libc::SIGTERM };
        let pid = i32::try_from(pid).context("agent pid out of range")?;
        // SAFETY: kill(2) with a pid we started and a valid signal number.
        unsafe { libc::kill(pid, signal) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
            if Instant::now() > deadline {
                bail!("agent {pid} of {node} did not stop within 10s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let started = Instant::now();
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("agent").arg("--config").arg(&config);
    let log = state_dir.join("logs").join(format!("agent_{node}.log"));
    let process = Process::spawn(cmd, Some(&netns), Some(&cgroup), &log)?;
    let pid = process.pid();
    let file = porin_testbed::state::StateFile::open_or_create(&Sandbox::state_file(state_dir))?;
    file.record_pid(pid, &format!("agent {node}"))?;
    file.update(|s| {
        if let Some(n) = s.nodes.iter_mut().find(|n| n.name == node) {
            n.agent_pid = Some(pid);
        }
    })?;
    process.detach();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = AgentClient::new(&socket).with_timeout(Duration::from_secs(2));
    loop {
        if let Ok(status) = runtime.block_on(client.status())
            && status.ready
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "restarted agent of {node} not ready after 60s; see {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "agent of {node} restarted (pid {pid}), ready in {} ms",
        started.elapsed().as_millis()
    );
    Ok(true)
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// The porin.toml of a sandbox node: local datastore over the user's manifests,
/// a runtime directory shared by the sandbox's agents, every plugin that works
/// on this machine enabled. An `[agent]` table in `extra` adds its keys to the node's
/// `[agent]` (a table cannot be opened twice); the rest of `extra` is appended.
pub(super) fn agent_config(node: &NodeSpec, runtime_dir: &Path, extra: &str) -> String {
    let (agent_extra, extra) = split_agent_table(extra);
    format!(
        r#"# Written by `porin sandbox up` for {name}.
[agent]
node_name = "{name}"
datastore = "local"
manifests = ["{manifests}"]
runtime_dir = "{runtime}"
state_dir = "{state}"
run_dir = "{run}"
api_socket = "{socket}"
metrics_address = "{metrics}"
pin_root = "{pins}"
pod_cidr = "{cidr}"
node_ip = "{ip}"
cgroup_path = "{cgroup}"
{ipv6}{agent_extra}
[plugins.observe]
enabled = true
{extra}
"#,
        name = node.name,
        manifests = node.manifests_dir.display(),
        runtime = runtime_dir.display(),
        state = node.socket_dir.join("state").display(),
        run = node.socket_dir.display(),
        socket = node.agent_socket.display(),
        metrics = node.metrics_addr,
        pins = node.pin_dir.display(),
        cidr = node.pod_cidr,
        ip = node.underlay_ip,
        cgroup = node.cgroup.display(),
        ipv6 = ipv6_lines(node),
    )
}

/// Splits the lines of an `[agent]` table (header excluded) out of `extra`: (those
/// lines, the rest). The table ends at the next table header.
fn split_agent_table(extra: &str) -> (String, String) {
    let (mut agent, mut rest) = (String::new(), String::new());
    let mut in_agent = false;
    for line in extra.lines() {
        let header = line.trim_start();
        if header.starts_with('[') {
            in_agent = header.trim_end() == "[agent]";
            if in_agent {
                continue;
            }
        }
        let out = if in_agent { &mut agent } else { &mut rest };
        out.push_str(line);
        out.push('\n');
    }
    (agent, rest)
}

/// The dual-stack lines of a node's `[agent]` (empty without `--ipv6`).
fn ipv6_lines(node: &NodeSpec) -> String {
    let Some(cidr) = node.pod_cidr_v6 else {
        return String::new();
    };
    let node_ip = node
        .underlay_ip_v6
        .map(|ip| format!("node_ip_v6 = \"{ip}\"\n"))
        .unwrap_or_default();
    format!("enable_ipv6 = true\npod_cidr_v6 = \"{cidr}\"\n{node_ip}")
}

/// Starts real agents (this binary) and talks to them through their API.
pub(super) struct SandboxAgents {
    exe: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl SandboxAgents {
    pub(super) fn new() -> Result<Self> {
        Ok(Self {
            exe: std::env::current_exe().context("finding the porin binary")?,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }
}

impl AgentControl for SandboxAgents {
    fn start_agent(&self, node: &NodeSpec, config_path: &Path) -> Result<Process, AgentError> {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("agent").arg("--config").arg(config_path);
        let mut process =
            Process::spawn(cmd, Some(&node.netns), Some(&node.cgroup), &node.agent_log)?;
        let client = AgentClient::new(&node.agent_socket).with_timeout(Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(status) = self.runtime.block_on(client.status())
                && status.ready
            {
                return Ok(process);
            }
            if let Ok(Some(exit)) = process.try_wait() {
                let log = std::fs::read_to_string(&node.agent_log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(format!(
                    "agent exited ({exit}); its log {}:\n{}",
                    node.agent_log.display(),
                    tail.join("\n")
                )
                .into());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "agent not ready after 60s; see {}",
                    node.agent_log.display()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn add_endpoint(
        &self,
        node: &NodeSpec,
        pod: &PodSpec,
        pod_netns: &Path,
    ) -> Result<Ipv4Addr, AgentError> {
        let client = AgentClient::new(&node.agent_socket);
        let request = AddEndpointRequest {
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            netns: pod_netns.display().to_string(),
            ifname: "eth0".to_string(),
            container_id: None,
        };
        let info = self.runtime.block_on(client.add_endpoint(&request))?;
        Ok(info.ipv4)
    }
}

/// Fail early with a clear message when not root.
pub(super) fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the sandbox makes network namespaces and loads eBPF programs: run it as root");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split_agent_table;

    #[test]
    fn an_agent_table_in_the_extra_config_joins_the_nodes_agent_section() {
        let (agent, rest) = split_agent_table(
            "[plugins.lb]\nenabled = true\n[agent]\nmap_pressure_interval_seconds = 1\n\n[plugins.policy]\nenabled = true\n",
        );
        assert_eq!(agent, "map_pressure_interval_seconds = 1\n\n");
        assert_eq!(
            rest,
            "[plugins.lb]\nenabled = true\n[plugins.policy]\nenabled = true\n"
        );
        let (agent, rest) = split_agent_table("[plugins.lb]\nenabled = true\n");
        assert_eq!(
            (agent.as_str(), rest.as_str()),
            ("", "[plugins.lb]\nenabled = true\n")
        );
    }
}
