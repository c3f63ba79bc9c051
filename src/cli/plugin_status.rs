//! One plugin's status document from each agent (`/v1/plugins/<name>/status`), for the
//! commands that show a plugin's runtime state (`porin encrypt status`, `porin policy get`).

use porin_core::api::AgentClient;
use serde_json::{Value, json};

use super::discover::AgentTarget;

/// One document per node, tagged with `node`; an agent that does not answer, or does not
/// run the plugin, appears with an `error`. The flag is false when any did.
pub async fn collect(targets: &[AgentTarget], plugin: &str) -> (Vec<Value>, bool) {
    let mut all = Vec::new();
    let mut ok = true;
    for t in targets {
        match AgentClient::new(&t.socket).plugin_status(plugin).await {
            Ok(mut status) => {
                if let Some(doc) = status.as_object_mut() {
                    doc.entry("node").or_insert_with(|| json!(t.node));
                }
                all.push(status);
            }
            Err(e) => {
                ok = false;
                all.push(json!({"node": t.node, "error": e.to_string()}));
            }
        }
    }
    (all, ok)
}

/// A JSON value as a table cell: strings bare, null as `-`.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
