//! `porin status`, `porin endpoint list`, `porin identity list`, `porin plugins list`.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use porin_core::api::{AgentClient, StatusResponse};
use serde::Serialize;

use super::discover::AgentTarget;
use super::output::{Format, print_json, print_table};

#[derive(Serialize)]
struct NodeStatus {
    node: String,
    #[serde(flatten)]
    status: Option<StatusResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `porin status [--wait]`: one line per node, or JSON. Exits non-zero when any
/// agent is unreachable or not ready.
pub async fn status(
    targets: &[AgentTarget],
    wait: Option<Duration>,
    format: Format,
) -> Result<bool> {
    let started = Instant::now();
    loop {
        let mut all = Vec::new();
        for t in targets {
            match AgentClient::new(&t.socket).status().await {
                Ok(s) => all.push(NodeStatus {
                    node: t.node.clone(),
                    status: Some(s),
                    error: None,
                }),
                Err(e) => all.push(NodeStatus {
                    node: t.node.clone(),
                    status: None,
                    error: Some(e.to_string()),
                }),
            }
        }
        let ready = all
            .iter()
            .all(|n| n.status.as_ref().is_some_and(|s| s.ready));
        if let Some(timeout) = wait
            && !ready
            && started.elapsed() < timeout
        {
            let waiting: Vec<&str> = all
                .iter()
                .filter(|n| !n.status.as_ref().is_some_and(|s| s.ready))
                .map(|n| n.node.as_str())
                .collect();
            eprintln!(
                "waiting for agents: {} ({}s)",
                waiting.join(", "),
                started.elapsed().as_secs()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        match format {
            Format::Json => print_json(&all)?,
            Format::Table => print_status_table(&all),
        }
        return Ok(ready);
    }
}

fn print_status_table(all: &[NodeStatus]) {
    for n in all {
        match (&n.status, &n.error) {
            (Some(s), _) => {
                println!(
                    "Node {}: {}",
                    n.node,
                    if s.ready { "Ready" } else { "Not ready" }
                );
                println!("  Version:     {}", s.version);
                println!("  Uptime:      {}s", s.uptime_seconds);
                println!(
                    "  Datastore:   {} ({})",
                    s.datastore.kind,
                    if s.datastore.synced {
                        "synced"
                    } else {
                        "syncing"
                    }
                );
                for e in &s.datastore.errors {
                    println!("    error: {e}");
                }
                println!(
                    "  Datapath:    {} ({} interfaces, pins {})",
                    if s.datapath.loaded {
                        "loaded"
                    } else {
                        "not loaded"
                    },
                    s.datapath.attached_interfaces,
                    s.datapath.pin_dir
                );
                if let Some(e) = &s.datapath.error {
                    println!("    error: {e}");
                }
                println!("  Endpoints:   {}", s.endpoints);
                println!("  Identities:  {}", s.identities);
                for p in &s.plugins {
                    println!(
                        "  Plugin {:<11} {}",
                        format!("{}:", p.name),
                        health_text(p.enabled, &p.health)
                    );
                }
            }
            (None, Some(e)) => println!("Node {}: unreachable: {e}", n.node),
            (None, None) => println!("Node {}: unknown", n.node),
        }
    }
}

/// The observe plugin's WASM modules: name and state text (`running (...)`,
/// `quarantined: trap: ...`), and their status as JSON.
async fn wasm_modules(client: &AgentClient) -> (Vec<(String, String)>, serde_json::Value) {
    let Ok(status) = client.plugin_status("observe").await else {
        return (Vec::new(), serde_json::Value::Null);
    };
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let rows = status["wasm"]
        .as_array()
        .map(|modules| {
            modules
                .iter()
                .map(|m| {
                    let mut state = text(&m["state"]);
                    if let Some(reason) = m["reason"].as_str() {
                        state = format!("{state}: {reason}: {}", text(&m["message"]));
                    } else {
                        state = format!(
                            "{state} ({} {}, {} flows)",
                            text(&m["kind"]),
                            m["fail"]
                                .as_str()
                                .map(|f| format!("fail {f}"))
                                .unwrap_or_default(),
                            m["flows"]
                        );
                    }
                    if let Some(e) = m["last_reload_error"].as_str() {
                        state = format!("{state}; last reload refused: {e}");
                    }
                    (text(&m["name"]), state)
                })
                .collect()
        })
        .unwrap_or_default();
    (rows, status["wasm"].clone())
}

fn health_text(enabled: bool, health: &porin_plugin_sdk::Health) -> String {
    use porin_plugin_sdk::Health;
    if !enabled {
        return "disabled".to_string();
    }
    match health {
        Health::Starting => "starting".to_string(),
        Health::Ok => "ok".to_string(),
        Health::Degraded(m) => format!("degraded: {m}"),
        Health::Failed(m) => format!("FAILED: {m}"),
        Health::Stopped => "stopped".to_string(),
    }
}

/// `porin endpoint list`.
pub async fn endpoints(targets: &[AgentTarget], format: Format) -> Result<()> {
    let mut rows = Vec::new();
    let mut json = Vec::new();
    for t in targets {
        let eps = AgentClient::new(&t.socket).endpoints().await?;
        for e in eps {
            rows.push(vec![
                t.node.clone(),
                e.id.to_string(),
                format!("{}/{}", e.namespace, e.pod),
                e.identity.to_string(),
                e.ipv4.to_string(),
                e.ipv6.map(|ip| ip.to_string()).unwrap_or_default(),
                e.state.as_str().to_string(),
                e.host_ifname.clone(),
            ]);
            json.push(serde_json::json!({ "node": t.node, "endpoint": e }));
        }
    }
    match format {
        Format::Json => print_json(&json),
        Format::Table => {
            let mut header = vec![
                "NODE",
                "ENDPOINT",
                "POD",
                "IDENTITY",
                "IPv4",
                "IPv6",
                "STATUS",
                "INTERFACE",
            ];
            // The IPv6 column only with dual stack: single-stack output stays as it was.
            const IPV6_COLUMN: usize = 5;
            if rows.iter().all(|r| r[IPV6_COLUMN].is_empty()) {
                header.remove(IPV6_COLUMN);
                for row in &mut rows {
                    row.remove(IPV6_COLUMN);
                }
            }
            print_table(&header, &rows);
            Ok(())
        }
    }
}

/// `porin identity list`: identities are cluster-wide, so nodes' lists are merged.
pub async fn identities(targets: &[AgentTarget], format: Format) -> Result<()> {
    let mut merged = std::collections::BTreeMap::new();
    for t in targets {
        for id in AgentClient::new(&t.socket).identities().await? {
            merged.entry(id.id).or_insert(id);
        }
    }
    let all: Vec<_> = merged.into_values().collect();
    match format {
        Format::Json => print_json(&all),
        Format::Table => {
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|i| vec![i.id.to_string(), i.labels.join(" ")])
                .collect();
            print_table(&["ID", "LABELS"], &rows);
            Ok(())
        }
    }
}

/// `porin plugins list`. Exits non-zero when an enabled plugin is not healthy.
pub async fn plugins(targets: &[AgentTarget], format: Format) -> Result<bool> {
    let mut rows = Vec::new();
    let mut json = Vec::new();
    let mut healthy = true;
    for t in targets {
        let client = AgentClient::new(&t.socket);
        for p in client.plugins().await? {
            healthy &= !p.enabled || p.health.is_ok();
            rows.push(vec![
                t.node.clone(),
                p.name.clone(),
                health_text(p.enabled, &p.health),
            ]);
            let mut entry = serde_json::json!({ "node": t.node, "plugin": p });
            if p.name == "observe" && p.enabled {
                let (modules, raw) = wasm_modules(&client).await;
                for (name, state) in modules {
                    rows.push(vec![t.node.clone(), format!("observe/wasm/{name}"), state]);
                }
                entry["wasm"] = raw;
            }
            json.push(entry);
        }
    }
    match format {
        Format::Json => print_json(&json)?,
        Format::Table => print_table(&["NODE", "PLUGIN", "STATE"], &rows),
    }
    if targets.is_empty() {
        bail!("no agents to ask");
    }
    Ok(healthy)
}
