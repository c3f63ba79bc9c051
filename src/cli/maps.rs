//! `porin map list`: the datapath's pinned maps, how many entries each holds and how
//! full it is (what `cilium_bpf_map_pressure` reports), counted when asked.

use anyhow::Result;
use porin_core::api::{AgentClient, MapInfo};
use serde_json::json;

use super::discover::AgentTarget;
use super::output::{Format, print_json, print_table};

/// One row per map and node. Exits non-zero when a map could not be counted.
pub async fn list(targets: &[AgentTarget], format: Format) -> Result<bool> {
    let mut rows = Vec::new();
    let mut json = Vec::new();
    let mut counted = true;
    for t in targets {
        for m in AgentClient::new(&t.socket).maps().await? {
            counted &= m.error.is_none();
            rows.push(row(&t.node, &m));
            json.push(json!({ "node": t.node, "map": m }));
        }
    }
    match format {
        Format::Json => print_json(&json)?,
        Format::Table => print_table(
            &["NODE", "MAP", "OWNER", "ENTRIES", "MAX", "PRESSURE"],
            &rows,
        ),
    }
    Ok(counted)
}

fn row(node: &str, m: &MapInfo) -> Vec<String> {
    let pressure = match &m.error {
        Some(e) => format!("error: {e}"),
        None => format!("{:.1}%", m.pressure * 100.0),
    };
    vec![
        node.to_owned(),
        m.name.clone(),
        m.owner.clone(),
        m.entries.to_string(),
        m.max_entries.to_string(),
        pressure,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_show_pressure_as_a_percentage_or_the_error() {
        let mut m = MapInfo {
            name: "porin_ct".into(),
            owner: "core".into(),
            entries: 3,
            max_entries: 8,
            pressure: 0.375,
            error: None,
        };
        assert_eq!(
            row("node-1", &m),
            ["node-1", "porin_ct", "core", "3", "8", "37.5%"]
        );
        m.error = Some("reading porin_ct: EPERM".into());
        assert_eq!(row("node-1", &m)[5], "error: reading porin_ct: EPERM");
    }
}
