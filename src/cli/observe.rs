//! `porin observe`: flows from every agent's flow socket, in Hubble's formats.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use porin_observe::{Flow, FlowRequest, format_compact};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::discover::AgentTarget;

/// `-o` of `porin observe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ObserveFormat {
    #[default]
    Compact,
    Json,
}

/// Hubble's filter flags (a first subset).
#[derive(Debug, Clone, Args, Default)]
pub struct ObserveArgs {
    /// Show the last N flows of each node (default 20; 0 with --follow shows only new ones).
    #[arg(long)]
    pub last: Option<usize>,
    /// Keep printing new flows.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only flows from or to this namespace.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Only flows from or to this pod (`[namespace/]name`).
    #[arg(long)]
    pub pod: Option<String>,
    /// Only flows with this verdict (FORWARDED, DROPPED).
    #[arg(long)]
    pub verdict: Option<String>,
    /// Only flows of this L4 protocol (tcp, udp, icmp).
    #[arg(long)]
    pub protocol: Option<String>,
    /// Only flows from or to this port.
    #[arg(long)]
    pub port: Option<u16>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: ObserveFormat,
    /// A flow socket to read instead of the discovered agents'.
    #[arg(long)]
    pub server: Option<PathBuf>,
}

impl ObserveArgs {
    fn keeps(&self, flow: &Flow) -> bool {
        let sides = [&flow.source, &flow.destination];
        if let Some(ns) = &self.namespace
            && !sides.iter().any(|s| &s.namespace == ns)
        {
            return false;
        }
        if let Some(pod) = &self.pod {
            let (ns, name) = match pod.split_once('/') {
                Some((ns, name)) => (Some(ns), name),
                None => (None, pod.as_str()),
            };
            if !sides
                .iter()
                .any(|s| s.pod_name.starts_with(name) && ns.is_none_or(|ns| s.namespace == ns))
            {
                return false;
            }
        }
        if let Some(v) = &self.verdict
            && !flow.verdict.eq_ignore_ascii_case(v)
        {
            return false;
        }
        let (proto, sport, dport) = match &flow.l4 {
            porin_observe::flow::L4::Tcp {
                source_port,
                destination_port,
                ..
            } => ("tcp", *source_port, *destination_port),
            porin_observe::flow::L4::Udp {
                source_port,
                destination_port,
            } => ("udp", *source_port, *destination_port),
            porin_observe::flow::L4::IcmpV4 { .. } => ("icmp", 0, 0),
            porin_observe::flow::L4::IcmpV6 { .. } => ("icmpv6", 0, 0),
            porin_observe::flow::L4::Other { .. } => ("other", 0, 0),
        };
        if let Some(p) = &self.protocol
            && !proto.eq_ignore_ascii_case(p)
            && !(p.eq_ignore_ascii_case("icmp") && proto.starts_with("icmp"))
        {
            return false;
        }
        if let Some(port) = self.port
            && sport != port
            && dport != port
        {
            return false;
        }
        true
    }
}

/// Print flows from all targets; returns when every socket is done (or never with --follow).
pub async fn observe(targets: &[AgentTarget], args: &ObserveArgs) -> Result<()> {
    let sockets: Vec<PathBuf> = match &args.server {
        Some(s) => vec![s.clone()],
        None => targets.iter().map(|t| t.flows_socket.clone()).collect(),
    };
    let request = FlowRequest {
        last: args.last.unwrap_or(if args.follow { 0 } else { 20 }),
        follow: args.follow,
    };
    let (tx, mut rx) = mpsc::channel::<Flow>(1024);
    for socket in sockets {
        let mut stream = UnixStream::connect(&socket).await.with_context(|| {
            format!(
                "connecting to the flow socket {} (is the observe plugin enabled?)",
                socket.display()
            )
        })?;
        let mut line = serde_json::to_string(&request)?;
        line.push('\n');
        stream.write_all(line.as_bytes()).await?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Flow>(&line) {
                    Ok(flow) => {
                        if tx.send(flow).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => eprintln!("{}: {line}", socket.display()),
                }
            }
        });
    }
    drop(tx);
    // Without --follow, merge the nodes' backlogs in time order.
    let mut backlog = Vec::new();
    while let Some(flow) = rx.recv().await {
        if !args.keeps(&flow) {
            continue;
        }
        if args.follow {
            print_flow(&flow, args.output)?;
        } else {
            backlog.push(flow);
        }
    }
    backlog.sort_by(|a, b| a.time.cmp(&b.time));
    for flow in &backlog {
        print_flow(flow, args.output)?;
    }
    Ok(())
}

/// Print one flow; a closed stdout (`porin observe | head`) ends the command quietly.
fn print_flow(flow: &Flow, format: ObserveFormat) -> Result<()> {
    use std::io::Write;
    let line = match format {
        ObserveFormat::Compact => format_compact(flow),
        ObserveFormat::Json => serde_json::to_string(&serde_json::json!({
            "flow": flow,
            "node_name": flow.node_name,
            "time": flow.time,
        }))?,
    };
    match writeln!(std::io::stdout().lock(), "{line}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => Ok(other?),
    }
}
