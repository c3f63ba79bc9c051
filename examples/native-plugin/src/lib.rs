//! `flow-exporter`: an example native Porin plugin. It writes the datapath's flows that
//! match its settings as JSON lines to a file, with the pods on both ends resolved.
//!
//! ```toml
//! [[plugins.native]]
//! path = "/usr/lib/porin/libporin_flow_exporter.so"
//! [plugins.native.settings]
//! output = "/var/log/porin/flows.jsonl"
//! verdict = "DROPPED"          # optional: FORWARDED or DROPPED
//! protocols = ["tcp", "udp"]   # optional: tcp, udp, icmp
//! ```

mod plugin;
mod record;
mod settings;

pub use plugin::FlowExporter;

porin_plugin_sdk::export_native_plugin!(FlowExporter::default());
