//! `porin connectivity test`: deploy test workloads, run the scenarios end to end (real
//! traffic, and the flows Porin reports for it through the Hubble API), print a summary
//! or a JSON report, remove what was deployed. See docs/connectivity-test.md.

mod capture;
mod checks;
mod cluster_deploy;
mod cluster_run;
mod flows;
mod report;
mod sandbox_deploy;
mod scenarios;
mod traffic;
mod workloads;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use porin_core::api::AgentClient;

use super::output::{Format, print_json};
use checks::Ctx;
use report::{NodeInfo, Report};
use sandbox_deploy::{DEFAULT_PLUGINS, SandboxSettings, TestSandbox};

#[derive(Debug, Subcommand)]
pub enum ConnectivityCommand {
    /// Deploy test workloads, check connectivity, policy, DNS, L7 and encryption end to
    /// end (traffic and flows), remove the workloads; exits non-zero on any failure.
    Test(TestArgs),
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Run on a sandbox of its own, brought up for the run and removed after it (the
    /// default; a sandbox started with `porin sandbox up` is left alone).
    #[arg(long, conflicts_with = "kubeconfig")]
    pub sandbox: bool,
    /// Run against the Kubernetes cluster of this kubeconfig (its current context): the
    /// workloads go in through the API, the checks run with `kubectl exec`.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// With --kubeconfig: where to read flows, Hubble Relay (`host:port`, e.g. a
    /// `kubectl port-forward` to hubble-relay) or an agent's Hubble socket.
    #[arg(long, default_value = "localhost:4245", requires = "kubeconfig")]
    pub hubble_server: String,
    /// With --kubeconfig: the clients' image (needs curl and sleep).
    #[arg(
        long,
        default_value = "curlimages/curl:8.11.1",
        requires = "kubeconfig"
    )]
    pub client_image: String,
    /// With --kubeconfig: the echo servers' image (needs sh and busybox httpd).
    #[arg(long, default_value = "busybox:1.37", requires = "kubeconfig")]
    pub echo_image: String,
    /// With --kubeconfig: how long the test pods may take to become Ready, in seconds.
    #[arg(long, default_value_t = 180, requires = "kubeconfig")]
    pub ready_timeout: u64,
    /// Only the scenarios whose names match (substring, `*` wildcards); repeatable or
    /// comma-separated.
    #[arg(long = "test", value_delimiter = ',')]
    pub test: Vec<String>,
    /// The plugin sections of the test agents' porin.toml (default: every plugin on).
    #[arg(long, conflicts_with = "kubeconfig")]
    pub agent_config: Option<PathBuf>,
    /// A directory of extra manifests deployed with the test workloads (e.g. your
    /// clusterwide policies, to see what they break).
    #[arg(long, conflicts_with = "kubeconfig")]
    pub extra_manifests: Option<PathBuf>,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Format,
}

/// Run `porin connectivity ...`.
pub fn run(command: ConnectivityCommand) -> Result<bool> {
    let ConnectivityCommand::Test(args) = command;
    if !scenarios::catalogue()
        .iter()
        .any(|s| scenarios::selected(s.name, &args.test))
    {
        let names: Vec<&str> = scenarios::catalogue().iter().map(|s| s.name).collect();
        bail!(
            "--test {}: no scenario matches (scenarios: {})",
            args.test.join(","),
            names.join(", ")
        );
    }
    let plugins = match &args.agent_config {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading --agent-config {}", path.display()))?,
        None => DEFAULT_PLUGINS.to_string(),
    };
    if let Some(dir) = &args.extra_manifests
        && !dir.is_dir()
    {
        bail!("--extra-manifests {}: not a directory", dir.display());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if let Some(kubeconfig) = &args.kubeconfig {
        let plan = cluster_run::ClusterRun {
            settings: cluster_deploy::ClusterSettings {
                kubeconfig: kubeconfig.clone(),
                client_image: args.client_image.clone(),
                echo_image: args.echo_image.clone(),
                ready_timeout: std::time::Duration::from_secs(args.ready_timeout),
            },
            patterns: &args.test,
            hubble_server: args.hubble_server.clone(),
        };
        let report = cluster_run::run(&plan, &runtime)?;
        return finish(&report, args.output);
    }
    let started = Instant::now();
    let started_at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    eprintln!("deploying the test workloads on a sandbox of their own...");
    let sandbox = TestSandbox::up(&SandboxSettings {
        plugins,
        extra_manifests: args.extra_manifests.clone(),
    })
    .with_context(|| match &args.agent_config {
        // Its lines are appended to each node's porin.toml, which the agent names.
        Some(path) => format!("with --agent-config {}", path.display()),
        None => "with every plugin on".to_string(),
    })?;
    let deploy_ms = elapsed_ms(started);
    let nodes = runtime.block_on(node_info(&sandbox));
    let enabled = enabled_everywhere(&nodes);
    eprintln!(
        "deployed in {:.1}s; plugins on: {}",
        deploy_ms as f64 / 1000.0,
        enabled.iter().cloned().collect::<Vec<_>>().join(", ")
    );
    let scenarios_started = Instant::now();
    let ctx = Ctx {
        sandbox: &sandbox,
        runtime: &runtime,
        enabled: &enabled,
    };
    let results = scenarios::run_all(&ctx, &args.test, &enabled, &mut |i, n, r| {
        eprintln!("{}", report::progress_line(i, n, r));
    });
    let scenarios_ms = elapsed_ms(scenarios_started);
    let cleanup_started = Instant::now();
    for problem in sandbox.down() {
        eprintln!("cleanup: {problem}");
    }
    let cleanup_ms = elapsed_ms(cleanup_started);
    let timing = report::Timing {
        started_at,
        deploy_ms,
        scenarios_ms,
        cleanup_ms,
        total_ms: elapsed_ms(started),
    };
    let report = Report::new("sandbox", timing, nodes, results?);
    finish(&report, args.output)
}

/// Prints the report; true when nothing failed.
fn finish(report: &Report, output: Format) -> Result<bool> {
    match output {
        Format::Json => print_json(report)?,
        Format::Table => report::print_summary(report),
    }
    Ok(report.success())
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Each node's version, plugins and plugin configuration.
async fn node_info(sandbox: &TestSandbox) -> Vec<NodeInfo> {
    let mut nodes = Vec::new();
    for target in &sandbox.targets {
        let client = AgentClient::new(&target.socket);
        let (version, plugins) = match client.status().await {
            Ok(s) => (
                s.version,
                serde_json::to_value(&s.plugins).unwrap_or_default(),
            ),
            Err(e) => (format!("unknown ({e})"), serde_json::Value::Null),
        };
        let config = sandbox
            .configs
            .iter()
            .find(|(n, _)| *n == target.node)
            .map(|(_, text)| report::plugin_config(text))
            .unwrap_or_default();
        nodes.push(NodeInfo {
            node: target.node.clone(),
            version,
            plugins,
            config,
        });
    }
    nodes
}

/// The plugins enabled on every node.
fn enabled_everywhere(nodes: &[NodeInfo]) -> BTreeSet<String> {
    let per_node: Vec<BTreeSet<String>> = nodes
        .iter()
        .map(|n| {
            n.plugins
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["enabled"] == true)
                .filter_map(|p| p["name"].as_str().map(str::to_string))
                .collect()
        })
        .collect();
    let mut sets = per_node.into_iter();
    let first = sets.next().unwrap_or_default();
    sets.fold(first, |all, set| all.intersection(&set).cloned().collect())
}
