//! `porin relay`: Hubble Relay over the agents' Hubble APIs.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use porin_observe::relay::{
    DEFAULT_RELAY_ADDRESS, PeerSet, RelayService, SortOptions, follow_peer_service,
};
use porin_observe::ui::{NoPolicyHints, PolicyHints, UiConfig, UiListener};
use porin_observe::{ClientTls, HubbleAddress, Listener, ServerTls, relay_router};

use super::discover;
use super::ui_hints::PolicyFileHints;

/// `porin relay` flags.
#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    /// Where to serve the Observer API: `[host]:port` (port 0: any free port) or
    /// `unix:///path`. The address actually bound is printed on stdout.
    #[arg(long, default_value = DEFAULT_RELAY_ADDRESS)]
    pub listen_address: String,
    /// An agent's Hubble API (`[NAME=]unix:///path` or `[NAME=]host:port`); repeatable.
    #[arg(long = "peer")]
    pub peers: Vec<String>,
    /// An agent's Peer service: the agents it announces are added and removed.
    #[arg(long)]
    pub peer_service: Option<String>,
    /// How often each agent is checked, and how soon a lost one is retried (ms).
    #[arg(long, default_value_t = 1000)]
    pub probe_interval_ms: u64,
    /// At most this many flows wait in the reorder window.
    #[arg(long, default_value_t = 100)]
    pub sort_buffer_len_max: usize,
    /// A flow waits at most this long in the reorder window (ms).
    #[arg(long, default_value_t = 1000)]
    pub sort_buffer_drain_timeout_ms: u64,
    /// Serve TLS with this certificate (PEM); needs --tls-relay-server-key-file.
    #[arg(long, requires = "tls_relay_server_key_file")]
    pub tls_relay_server_cert_file: Option<PathBuf>,
    /// The key of --tls-relay-server-cert-file (PEM).
    #[arg(long, requires = "tls_relay_server_cert_file")]
    pub tls_relay_server_key_file: Option<PathBuf>,
    /// Require client certificates signed by these CAs (PEM; repeatable, or comma-separated).
    #[arg(long, value_delimiter = ',', requires = "tls_relay_server_cert_file")]
    pub tls_relay_client_ca_files: Vec<PathBuf>,
    /// Reach agents on TCP over TLS, trusting these CAs (PEM; repeatable, or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub tls_hubble_server_ca_files: Vec<PathBuf>,
    /// Client certificate (PEM) presented to agents that require one.
    #[arg(long, requires = "tls_hubble_client_key_file")]
    pub tls_hubble_client_cert_file: Option<PathBuf>,
    /// The key of --tls-hubble-client-cert-file (PEM).
    #[arg(long, requires = "tls_hubble_client_cert_file")]
    pub tls_hubble_client_key_file: Option<PathBuf>,
    /// The name expected in agents' certificates (default: the host dialled).
    #[arg(long)]
    pub tls_hubble_server_name: Option<String>,
    /// Serve the Flow UI on this address (`:12000`, `host:port`; port 0: any free
    /// port). The page's URL is printed on stdout (docs/ui.md).
    #[arg(long)]
    pub ui: Option<String>,
    /// Policy files or manifest directories that the UI traces to explain dropped
    /// connections, as `porin policy trace` does (repeatable).
    #[arg(long = "ui-policy", requires = "ui")]
    pub ui_policies: Vec<PathBuf>,
}

impl RelayArgs {
    /// TLS of the relay's own listener.
    fn server_tls(&self) -> Option<ServerTls> {
        Some(ServerTls {
            cert_file: self.tls_relay_server_cert_file.clone()?,
            key_file: self.tls_relay_server_key_file.clone()?,
            client_ca_files: self.tls_relay_client_ca_files.clone(),
        })
    }

    /// TLS towards the agents: on when a CA or a client certificate is given.
    fn hubble_tls(&self) -> Option<ClientTls> {
        let tls = ClientTls {
            ca_files: self.tls_hubble_server_ca_files.clone(),
            cert_file: self.tls_hubble_client_cert_file.clone(),
            key_file: self.tls_hubble_client_key_file.clone(),
            server_name: self.tls_hubble_server_name.clone(),
        };
        (tls != ClientTls::default()).then_some(tls)
    }
}

/// Agents named on the command line, else the sandbox's nodes (or the local agent).
fn static_peers(args: &RelayArgs) -> Result<Vec<(String, HubbleAddress)>> {
    if !args.peers.is_empty() {
        return Ok(args
            .peers
            .iter()
            .map(|p| match p.split_once('=') {
                Some((name, addr)) => (name.to_string(), HubbleAddress::parse(addr)),
                None => (p.clone(), HubbleAddress::parse(p)),
            })
            .collect());
    }
    if args.peer_service.is_some() {
        return Ok(Vec::new());
    }
    Ok(discover::targets(None, None)?
        .into_iter()
        .map(|t| (t.node, HubbleAddress::Unix(t.hubble_socket)))
        .collect())
}

/// Run the relay until killed.
pub async fn run(args: &RelayArgs) -> Result<()> {
    let probe = Duration::from_millis(args.probe_interval_ms.max(10));
    let hubble_tls = args.hubble_tls();
    if let Some(tls) = &hubble_tls {
        // Check the files now: a typo fails the command, not every connection later.
        tls.config().context("porin relay --tls-hubble-*")?;
    }
    let peers = PeerSet::with_tls(probe, hubble_tls);
    for (name, address) in static_peers(args)? {
        peers.add(&name, address);
    }
    if let Some(service) = &args.peer_service {
        tokio::spawn(follow_peer_service(
            peers.clone(),
            HubbleAddress::parse(service),
            probe,
        ));
    }
    let relay = RelayService::new(
        peers.clone(),
        SortOptions {
            max_len: args.sort_buffer_len_max,
            window: Duration::from_millis(args.sort_buffer_drain_timeout_ms),
        },
    );
    let listener = Listener::bind(&args.listen_address)
        .await
        .with_context(|| format!("porin relay --listen-address {}", args.listen_address))?;
    let ui = match &args.ui {
        Some(address) => Some(ui_server(args, address, &listener.local_address()).await?),
        None => None,
    };
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "relay listening on {}", listener.local_address())?;
        if let Some((ui, _)) = &ui {
            writeln!(out, "ui listening on {}", ui.url())?;
        }
        out.flush()?;
    }
    let router = relay_router(relay, args.server_tls().as_ref())
        .context("porin relay --tls-relay-server-*")?;
    match ui {
        Some((ui, config)) => tokio::select! {
            served = listener.serve(router) => served?,
            served = ui.serve(config) => served.context("porin relay --ui")?,
        },
        None => listener.serve(router).await?,
    }
    Ok(())
}

/// The Flow UI over the relay's own Observer API (reached on `relay_address`).
async fn ui_server(
    args: &RelayArgs,
    address: &str,
    relay_address: &str,
) -> Result<(UiListener, UiConfig)> {
    if args.server_tls().is_some() {
        anyhow::bail!(
            "porin relay --ui: the UI reads the relay's Observer API in plaintext; \
             it cannot be combined with --tls-relay-server-cert-file yet"
        );
    }
    let upstream = match relay_address.rsplit_once(':') {
        Some(("0.0.0.0" | "[::]", port)) => HubbleAddress::Tcp(format!("127.0.0.1:{port}")),
        _ => HubbleAddress::parse(relay_address),
    };
    let hints: std::sync::Arc<dyn PolicyHints> = if args.ui_policies.is_empty() {
        std::sync::Arc::new(NoPolicyHints)
    } else {
        for path in &args.ui_policies {
            if !path.exists() {
                anyhow::bail!(
                    "porin relay --ui-policy {}: no such file or directory",
                    path.display()
                );
            }
        }
        std::sync::Arc::new(PolicyFileHints::new(args.ui_policies.clone()))
    };
    let listener = UiListener::bind(address)
        .await
        .with_context(|| format!("porin relay --ui {address}"))?;
    Ok((listener, UiConfig::new(upstream, hints)))
}
