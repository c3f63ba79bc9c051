//! The `porin` command line.

mod connectivity;
mod discover;
mod encrypt;
mod maps;
mod observe;
mod output;
mod plugin_status;
mod plugins_toggle;
mod policy;
mod policy_get;
mod query;
mod relay;
mod sandbox;
mod sandbox_plain;
mod service;
mod ui_hints;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

use output::Format;

/// Porin: eBPF networking, policy, encryption and observability for Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "porin", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which agent(s) a query command talks to.
#[derive(Debug, Clone, clap::Args)]
struct Target {
    /// The agent API socket (default: the running sandbox's agents, else /var/run/porin/agent.sock).
    #[arg(long, global = true, env = "PORIN_SOCKET")]
    socket: Option<PathBuf>,
    /// Only this node of the sandbox.
    #[arg(long, global = true)]
    node: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent in the foreground.
    Agent {
        /// The agent's configuration file.
        #[arg(long, short = 'c', default_value = "/etc/porin/porin.toml")]
        config: PathBuf,
    },
    /// Show the agents' health.
    Status {
        /// Wait until every agent is ready (or --timeout passes).
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        target: Target,
    },
    /// Endpoints (pods) managed by the agents.
    Endpoint {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Services the load balancer serves (frontends and backends).
    Service {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Security identities.
    Identity {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// The datapath's eBPF maps: entries, size and pressure, counted now.
    Map {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Plugins: list them with their health, turn them on or off at runtime.
    Plugins {
        #[command(subcommand)]
        command: plugins_toggle::PluginsCommand,
    },
    /// Network policies, offline: validate files, trace a connection.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Transparent encryption between nodes (WireGuard).
    Encrypt {
        #[command(subcommand)]
        command: encrypt::EncryptCommand,
    },
    /// Print flows, like `hubble observe`.
    Observe {
        #[command(flatten)]
        args: Box<observe::ObserveArgs>,
        #[command(flatten)]
        target: Target,
    },
    /// Hubble Relay: one Observer API over every agent's (listens on :4245).
    Relay {
        #[command(flatten)]
        args: Box<relay::RelayArgs>,
    },
    /// Run Porin's userspace WireGuard device (gotatun) on a TUN device in the foreground,
    /// configured with `wg` through /var/run/wireguard/IFNAME.sock like wireguard-go;
    /// the encryption plugin starts it.
    Wireguard {
        /// The TUN interface to create (at most 15 bytes).
        interface: String,
        /// Runtime worker threads (0: one per CPU).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// A local cluster of network namespaces (see docs/sandbox.md).
    Sandbox {
        #[command(subcommand)]
        command: sandbox::SandboxCommand,
    },
    /// End-to-end checks of an installation (`porin connectivity test`).
    Connectivity {
        #[command(subcommand)]
        command: connectivity::ConnectivityCommand,
    },
    /// Print the CustomResourceDefinitions Porin uses (CiliumNode, CiliumEndpoint,
    /// CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy) as YAML, generated from
    /// the Rust types; `deploy/crds/porin-crds.yaml` is this output.
    Crds,
}

#[derive(Debug, Subcommand)]
enum ListCommand {
    /// List them.
    List {
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        target: Target,
    },
}

/// Parse the command line, run the command, map the outcome to an exit code.
pub fn run() -> ExitCode {
    // `porin observe --not FLAG` is positional; folded into a hidden flag before parsing.
    let cli = Cli::parse_from(observe::negate::fold_not(std::env::args_os()));
    let default_level = match &cli.command {
        // The agent's log level comes from its configuration; a configuration that
        // does not parse is reported by the agent itself.
        Command::Agent { config } => porin_core::config::Config::from_file(config)
            .map(|c| c.agent.log_level)
            .unwrap_or_else(|_| "info".to_string()),
        Command::Relay { .. } => "info".to_string(),
        // The tunnel is a long-running child of the agent; its lifecycle belongs in the log.
        Command::Wireguard { .. } => "info".to_string(),
        _ => "warn".to_string(),
    };
    init_tracing(&default_level);
    match dispatch(cli.command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, skipping causes whose text the message already
/// contains (many of our errors embed their source in their own message).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORIN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn dispatch(command: Command) -> Result<bool> {
    match command {
        Command::Agent { config } => {
            runtime()?.block_on(porin_core::agent::run(&config, builtin_plugins()))?;
            Ok(true)
        }
        Command::Status {
            wait,
            timeout,
            output,
            target,
        } => {
            let targets = discover::targets(target.socket.as_deref(), target.node.as_deref())?;
            let wait = wait.then(|| Duration::from_secs(timeout));
            runtime()?.block_on(query::status(&targets, wait, output))
        }
        Command::Endpoint {
            command: ListCommand::List { output, target },
        } => {
            let targets = discover::targets(target.socket.as_deref(), target.node.as_deref())?;
            runtime()?.block_on(query::endpoints(&targets, output))?;
            Ok(true)
        }
        Command::Service {
            command: ListCommand::List { output, target },
        } => {
            let targets = discover::targets(target.socket.as_deref(), target.node.as_deref())?;
            runtime()?.block_on(service::list(&targets, output))
        }
        Command::Identity {
            command: ListCommand::List { output, target },
        } => {
            let targets = discover::targets(target.socket.as_deref(), target.node.as_deref())?;
            runtime()?.block_on(query::identities(&targets, output))?;
            Ok(true)
        }
        Command::Map {
            command: ListCommand::List { output, target },
        } => {
            let targets = discover::targets(target.socket.as_deref(), target.node.as_deref())?;
            runtime()?.block_on(maps::list(&targets, output))
        }
        Command::Plugins {
            command: plugins_toggle::PluginsCommand::List { output, target },
        } => {
            let targets = discover::targets(target.socket.as_deref(), target.node.as_deref())?;
            runtime()?.block_on(query::plugins(&targets, output))
        }
        Command::Plugins {
            command:
                plugins_toggle::PluginsCommand::Status {
                    name,
                    output: _,
                    target,
                },
        } => {
            let targets = discover::targets(target.socket.as_deref(), target.node.as_deref())?;
            runtime()?.block_on(plugins_toggle::status(&targets, &name))
        }
        Command::Plugins {
            command:
                plugins_toggle::PluginsCommand::Enable {
                    name,
                    output,
                    target,
                },
        } => {
            let targets = discover::targets(target.socket.as_deref(), target.node.as_deref())?;
            runtime()?.block_on(plugins_toggle::toggle(&targets, &name, true, output))
        }
        Command::Plugins {
            command:
                plugins_toggle::PluginsCommand::Disable {
                    name,
                    output,
                    target,
                },
        } => {
            let targets = discover::targets(target.socket.as_deref(), target.node.as_deref())?;
            runtime()?.block_on(plugins_toggle::toggle(&targets, &name, false, output))
        }
        Command::Observe { args, target } => {
            let targets = discover::targets(target.socket.as_deref(), target.node.as_deref())?;
            runtime()?.block_on(observe::observe(&targets, &args))?;
            Ok(true)
        }
        Command::Encrypt {
            command: encrypt::EncryptCommand::Status { output, target },
        } => {
            let targets = discover::targets(target.socket.as_deref(), target.node.as_deref())?;
            runtime()?.block_on(encrypt::status(&targets, output))
        }
        Command::Relay { args } => {
            runtime()?.block_on(relay::run(&args))?;
            Ok(true)
        }
        Command::Wireguard { interface, threads } => {
            let mut options = porin_wg::TunnelOptions::new(interface);
            options.worker_threads = threads;
            porin_wg::run(&options)?;
            Ok(true)
        }
        Command::Sandbox { command } => sandbox::run(command),
        Command::Connectivity { command } => connectivity::run(command),
        Command::Crds => {
            print!("{}", porin_core::state::crds::to_yaml()?);
            Ok(true)
        }
        Command::Policy {
            command: policy::PolicyCommand::Get { output, target },
        } => {
            let targets = discover::targets(target.socket.as_deref(), target.node.as_deref())?;
            runtime()?.block_on(policy_get::get(&targets, output))
        }
        Command::Policy { command } => policy::run(command),
    }
}

/// The built-in plugins, registered statically; `enabled` in porin.toml switches them.
fn builtin_plugins() -> Vec<Box<dyn porin_plugin_sdk::Plugin>> {
    vec![
        Box::new(porin_lb::LbPlugin::default()),
        Box::new(porin_policy::PolicyPlugin::default()),
        Box::new(porin_encryption::EncryptionPlugin::default()),
        Box::new(porin_observe::ObservePlugin::default()),
    ]
}
