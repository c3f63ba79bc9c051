//! `porin encrypt status`: each agent's WireGuard device and peers.

use anyhow::Result;
use clap::Subcommand;
use porin_core::api::AgentClient;
use serde_json::{Value, json};

use super::Target;
use super::discover::AgentTarget;
use super::output::{Format, print_json, print_table};

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
    let mut all = Vec::new();
    let mut ok = true;
    for t in targets {
        match AgentClient::new(&t.socket)
            .plugin_status("encryption")
            .await
        {
            Ok(status) => all.push(status),
            Err(e) => {
                ok = false;
                all.push(json!({"node": t.node, "error": e.to_string()}));
            }
        }
    }
    match format {
        Format::Json => print_json(&all)?,
        Format::Table => print_status(&all),
    }
    Ok(ok)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
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
