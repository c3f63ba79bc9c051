//! `porin relay`: Hubble Relay over the agents' Hubble APIs.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use porin_observe::relay::{
    DEFAULT_RELAY_ADDRESS, PeerSet, RelayService, SortOptions, follow_peer_service,
};
use porin_observe::{HubbleAddress, Listener, relay_router};

use super::discover;

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
    let peers = PeerSet::new(probe);
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
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "relay listening on {}", listener.local_address())?;
        out.flush()?;
    }
    listener.serve(relay_router(relay)?).await?;
    Ok(())
}
