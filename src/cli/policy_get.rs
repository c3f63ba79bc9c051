//! `porin policy get`: the policies each agent enforces, its revision and the problems.

use anyhow::Result;

use super::discover::AgentTarget;
use super::output::{Format, print_json, print_table};
use super::plugin_status::{collect, text};

/// Prints every agent's policy status. Exits non-zero when an agent does not answer or
/// does not run the policy plugin; invalid policies are listed, not a failure.
pub async fn get(targets: &[AgentTarget], format: Format) -> Result<bool> {
    let (all, ok) = collect(targets, "policy").await;
    match format {
        Format::Json => print_json(&all)?,
        Format::Table => {
            for node in &all {
                print_node(node);
            }
        }
    }
    Ok(ok)
}

fn print_node(node: &serde_json::Value) {
    println!("Node {}:", text(&node["node"]));
    if node["revision"].is_null() {
        println!("  error: {}", text(&node["error"]));
        return;
    }
    println!(
        "  Revision: {}   Enforcement: {}   Audit: {}   Endpoints: {}   Map entries: {}",
        text(&node["revision"]),
        text(&node["enforcement"]),
        text(&node["policy_audit_mode"]),
        text(&node["endpoints"]),
        text(&node["map_entries"]),
    );
    let rows: Vec<Vec<String>> = node["policies"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                format!("  {}", text(&p["kind"])),
                text(&p["namespace"]),
                text(&p["name"]),
                text(&p["rules"]),
                text(&p["id"]),
            ]
        })
        .collect();
    print_table(&["  KIND", "NAMESPACE", "NAME", "RULES", "ID"], &rows);
    for e in node["errors"].as_array().into_iter().flatten() {
        println!("  error: {}", text(e));
    }
}
