//! `porin service list`: the services each agent's load balancer serves.

use anyhow::Result;
use porin_core::api::AgentClient;
use serde_json::{Value, json};

use super::discover::AgentTarget;
use super::output::{Format, print_json, print_table};

/// One row per frontend and node (like `cilium service list`); JSON carries the
/// nodes' documents. Exits non-zero when an agent does not run the lb plugin.
pub async fn list(targets: &[AgentTarget], format: Format) -> Result<bool> {
    let mut nodes = Vec::new();
    let mut rows = Vec::new();
    let mut ok = true;
    for t in targets {
        match AgentClient::new(&t.socket).plugin_status("lb").await {
            Ok(status) => {
                for s in status["services"].as_array().into_iter().flatten() {
                    rows.push(row(&t.node, s));
                }
                nodes.push(json!({ "node": t.node, "services": status["services"] }));
            }
            Err(e) => {
                ok = false;
                nodes.push(json!({ "node": t.node, "error": e.to_string() }));
            }
        }
    }
    match format {
        Format::Json => print_json(&nodes)?,
        Format::Table => {
            print_table(
                &[
                    "NODE", "FRONTEND", "PROTOCOL", "TYPE", "AFFINITY", "BACKENDS",
                ],
                &rows,
            );
            for n in nodes.iter().filter(|n| n.get("error").is_some()) {
                eprintln!("{}: {}", text(&n["node"]), text(&n["error"]));
            }
        }
    }
    Ok(ok)
}

fn row(node: &str, service: &Value) -> Vec<String> {
    let backends: Vec<&str> = service["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    vec![
        node.to_string(),
        text(&service["frontend"]).to_string(),
        text(&service["protocol"]).to_string(),
        text(&service["type"]).to_string(),
        match service["affinity"]["timeout_seconds"].as_u64() {
            Some(timeout) => format!("ClientIP {timeout}s"),
            None => "None".to_string(),
        },
        match service.get("error").and_then(Value::as_str) {
            // Not in the datapath (e.g. a full map): say so, with the reason.
            Some(error) => format!("NOT PROGRAMMED: {error}"),
            None if backends.is_empty() => "(none: refused)".to_string(),
            None => backends.join(", "),
        },
    ]
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}
