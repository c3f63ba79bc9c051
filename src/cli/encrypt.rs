//! `porin encrypt status`: each agent's WireGuard device and peers.

use anyhow::Result;
use clap::Subcommand;
use serde_json::Value;

use super::Target;
use super::discover::AgentTarget;
use super::output::{Format, print_json, print_table};
use super::plugin_status::{collect, text};

#[derive(Debug, Subcommand)]
pub enum EncryptCommand {
    /// The WireGuard device, its public key and peers (endpoint, latest handshake, bytes).
    Status {
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        target: Target,
    },
}

/// One document per node (`/v1/plugins/encryption/status`); an agent without the plugin
/// running appears with an `error`. Exits non-zero when any agent has none.
pub async fn status(targets: &[AgentTarget], format: Format) -> Result<bool> {
    let (all, ok) = collect(targets, "encryption").await;
    match format {
        Format::Json => print_json(&all)?,
        Format::Table => print_status(&all),
    }
    Ok(ok)
}

fn print_status(all: &[Value]) {
    for node in all {
        println!("Node {}:", text(&node["node"]));
        if node["device"].is_null() {
            println!("  error: {}", text(&node["error"]));
            continue;
        }
        println!(
            "  Device:      {} ({})",
            text(&node["device"]),
            text(&node["implementation"])
        );
        println!("  Public key:  {}", text(&node["public_key"]));
        println!("  Endpoint:    {}", text(&node["endpoint"]));
        if !node["error"].is_null() {
            println!("  error: {}", text(&node["error"]));
        }
        let rows: Vec<Vec<String>> = node["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                vec![
                    text(&p["node"]),
                    text(&p["endpoint"]),
                    p["latest_handshake_seconds_ago"]
                        .as_u64()
                        .map_or_else(|| "never".to_string(), |s| format!("{s}s ago")),
                    text(&p["rx_bytes"]),
                    text(&p["tx_bytes"]),
                    text(&p["public_key"]),
                ]
            })
            .collect();
        print_table(
            &[
                "  PEER",
                "ENDPOINT",
                "HANDSHAKE",
                "RX BYTES",
                "TX BYTES",
                "PUBLIC KEY",
            ],
            &rows,
        );
    }
}
