//! One exported line.

use porin_plugin_sdk::{DatapathEvent, PluginContext};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Peer {
    pub ip: String,
    pub port: u16,
    pub identity: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct FlowRecord<'a> {
    pub node: &'a str,
    pub ktime_ns: u64,
    pub kind: porin_plugin_sdk::EventKind,
    pub verdict: porin_plugin_sdk::Verdict,
    pub drop_reason: u8,
    pub protocol: u8,
    pub tcp_flags: u8,
    pub is_reply: bool,
    pub source: Peer,
    pub destination: Peer,
}

impl<'a> FlowRecord<'a> {
    /// The record of `event`, with the pods on both ends resolved through the agent.
    pub fn new(event: &DatapathEvent, ctx: &'a dyn PluginContext) -> Self {
        let peer = |ip: std::net::IpAddr, port: u16, identity: u32| {
            let meta = ctx.resolve_endpoint(ip);
            Peer {
                ip: ip.to_string(),
                port,
                identity,
                namespace: meta.as_ref().map(|m| m.namespace.clone()),
                pod: meta.map(|m| m.pod_name),
            }
        };
        Self {
            node: ctx.node_name(),
            ktime_ns: event.ktime_ns,
            kind: event.kind,
            verdict: event.verdict,
            drop_reason: event.drop_reason,
            protocol: event.protocol,
            tcp_flags: event.tcp_flags,
            is_reply: event.is_reply,
            source: peer(event.src, event.src_port, event.src_identity),
            destination: peer(event.dst, event.dst_port, event.dst_identity),
        }
    }
}
