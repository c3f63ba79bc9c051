//! `porin plugins enable|disable NAME`: turn a plugin on or off without restarting the
//! agent (on every targeted node).

use anyhow::{Result, bail};
use clap::Subcommand;
use porin_core::api::AgentClient;

use super::Target;
use super::discover::AgentTarget;
use super::output::{Format, print_json, print_table};

#[derive(Debug, Subcommand)]
pub(super) enum PluginsCommand {
    /// List them.
    List {
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        target: Target,
    },
    /// A running plugin's own status document, per node, as JSON (for a native plugin:
    /// its path, ABI version, own status and metrics).
    Status {
        /// The plugin.
        name: String,
        /// Accepted for symmetry: the document is JSON either way.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        target: Target,
    },
    /// Turn a plugin on: its programs, maps and tasks come back from the current state.
    Enable {
        /// The plugin (`lb`, `policy`, `encryption`, `observe`, or a native plugin's name).
        name: String,
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        target: Target,
    },
    /// Turn a plugin off: its programs' contributions, maps and tasks are removed; other
    /// plugins' traffic goes on.
    Disable {
        /// The plugin.
        name: String,
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        target: Target,
    },
}

/// `porin plugins status NAME`: one JSON document per node; fails when any agent does
/// not run the plugin.
pub(super) async fn status(targets: &[AgentTarget], name: &str) -> Result<bool> {
    if targets.is_empty() {
        bail!("no agents to ask");
    }
    let (all, ok) = super::plugin_status::collect(targets, name).await;
    print_json(&all)?;
    Ok(ok)
}

/// Toggles `name` on every target. Fails when any agent refused.
pub(super) async fn toggle(
    targets: &[AgentTarget],
    name: &str,
    enabled: bool,
    format: Format,
) -> Result<bool> {
    if targets.is_empty() {
        bail!("no agents to ask");
    }
    let mut rows = Vec::new();
    let mut json = Vec::new();
    let mut ok = true;
    for t in targets {
        match AgentClient::new(&t.socket)
            .set_plugin_enabled(name, enabled)
            .await
        {
            Ok(r) => {
                let what = match (r.changed, r.enabled) {
                    (false, true) => "already enabled",
                    (false, false) => "already disabled",
                    (true, true) => "enabled",
                    (true, false) => "disabled",
                };
                rows.push(vec![
                    t.node.clone(),
                    r.plugin.clone(),
                    what.to_string(),
                    format!("{:.0} ms", r.elapsed_ms),
                ]);
                json.push(serde_json::json!({ "node": t.node, "result": r }));
            }
            Err(e) => {
                ok = false;
                rows.push(vec![
                    t.node.clone(),
                    name.to_string(),
                    format!("error: {e}"),
                    String::new(),
                ]);
                json.push(serde_json::json!({ "node": t.node, "error": e.to_string() }));
            }
        }
    }
    match format {
        Format::Json => print_json(&json)?,
        Format::Table => print_table(&["NODE", "PLUGIN", "RESULT", "TIME"], &rows),
    }
    Ok(ok)
}
