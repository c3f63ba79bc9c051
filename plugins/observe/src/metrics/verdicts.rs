//! `flow`, `drop` and `flows-to-world`: what happened to flows.

use hubble_proto::flow::{self as pb, Flow, layer4::Protocol};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::{ContextOptions, Handler, Labels, protocol, with_context};
use crate::flow::{MESSAGE_TYPE_DROP, MESSAGE_TYPE_POLICY_VERDICT, MESSAGE_TYPE_TRACE};

/// Cilium's monitor message types of captures (not produced) and L7 records.
const MESSAGE_TYPE_CAPTURE: i32 = 3;
const MESSAGE_TYPE_ACCESS_LOG: i32 = 129;

/// `hubble_flows_processed_total{protocol,type,subtype,verdict,...}`.
pub struct FlowHandler {
    flows: Family<Labels, Counter>,
    ctx: ContextOptions,
}

impl FlowHandler {
    pub fn register(registry: &mut Registry, ctx: ContextOptions) -> Self {
        let flows = Family::default();
        registry.register(
            "hubble_flows_processed",
            "Total number of flows processed",
            flows.clone(),
        );
        ctx.watch(&flows);
        Self { flows, ctx }
    }
}

impl Handler for FlowHandler {
    fn name(&self) -> &'static str {
        "hubble_flows_processed"
    }

    fn process_with(&self, flow: &Flow, extra: &[(String, String)]) {
        let (kind, subtype) = type_and_subtype(flow);
        let labels = with_context(
            &[
                ("protocol", protocol(flow).to_string()),
                ("type", kind.to_string()),
                ("subtype", subtype),
                ("verdict", verdict(flow).to_string()),
            ],
            &self.ctx,
            flow,
            extra,
        );
        self.flows.get_or_create(&labels).inc();
    }
}

/// Hubble's `type` and `subtype` labels from the flow's monitor event type.
fn type_and_subtype(flow: &Flow) -> (&'static str, String) {
    let (kind, sub_type) = flow
        .event_type
        .as_ref()
        .map_or((0, 0), |e| (e.r#type, e.sub_type));
    match kind {
        MESSAGE_TYPE_DROP => ("Drop", String::new()),
        MESSAGE_TYPE_TRACE => ("Trace", trace_point(sub_type).to_string()),
        MESSAGE_TYPE_CAPTURE => ("Capture", String::new()),
        MESSAGE_TYPE_POLICY_VERDICT => ("PolicyVerdict", String::new()),
        MESSAGE_TYPE_ACCESS_LOG => ("L7", String::new()),
        other => ("Unknown", other.to_string()),
    }
}

/// Cilium's trace observation point names (`pkg/monitor/api`), by sub-type.
fn trace_point(sub_type: i32) -> &'static str {
    match sub_type {
        0 => "to-endpoint",
        1 => "to-proxy",
        2 => "to-host",
        3 => "to-stack",
        4 => "to-overlay",
        5 => "from-endpoint",
        6 => "from-proxy",
        7 => "from-host",
        8 => "from-stack",
        9 => "from-overlay",
        10 => "from-network",
        11 => "to-network",
        _ => "unknown",
    }
}

fn verdict(flow: &Flow) -> &'static str {
    pb::Verdict::try_from(flow.verdict)
        .unwrap_or(pb::Verdict::Unknown)
        .as_str_name()
}

/// `hubble_drop_total{reason,protocol,...}`: dropped flows by Hubble's reason.
pub struct DropHandler {
    drops: Family<Labels, Counter>,
    ctx: ContextOptions,
}

impl DropHandler {
    pub fn register(registry: &mut Registry, ctx: ContextOptions) -> Self {
        let drops = Family::default();
        registry.register("hubble_drop", "Number of drops", drops.clone());
        ctx.watch(&drops);
        Self { drops, ctx }
    }
}

impl Handler for DropHandler {
    fn name(&self) -> &'static str {
        "hubble_drop"
    }

    fn process_with(&self, flow: &Flow, extra: &[(String, String)]) {
        if flow.verdict != pb::Verdict::Dropped as i32 {
            return;
        }
        let reason = pb::DropReason::try_from(flow.drop_reason_desc)
            .map_or("DROP_REASON_UNKNOWN", |r| r.as_str_name());
        let labels = with_context(
            &[
                ("reason", reason.to_string()),
                ("protocol", protocol(flow).to_string()),
            ],
            &self.ctx,
            flow,
            extra,
        );
        self.drops.get_or_create(&labels).inc();
    }
}

/// `hubble_flows_to_world_total{protocol,verdict[,port],...}`: flows whose
/// destination is `reserved:world`. Drops count only when policy denied them,
/// unless `any-drop`; `syn-only` counts TCP connection attempts only.
pub struct WorldHandler {
    flows: Family<Labels, Counter>,
    ctx: ContextOptions,
    any_drop: bool,
    port: bool,
    syn_only: bool,
}

impl WorldHandler {
    pub fn register(registry: &mut Registry, ctx: ContextOptions, flags: &[String]) -> Self {
        let flows = Family::default();
        registry.register(
            "hubble_flows_to_world",
            "Total number of flows to reserved:world",
            flows.clone(),
        );
        let has = |f: &str| flags.iter().any(|x| x == f);
        ctx.watch(&flows);
        Self {
            flows,
            ctx,
            any_drop: has("any-drop"),
            port: has("port"),
            syn_only: has("syn-only"),
        }
    }
}

impl Handler for WorldHandler {
    fn name(&self) -> &'static str {
        "hubble_flows_to_world"
    }

    fn process_with(&self, flow: &Flow, extra: &[(String, String)]) {
        let to_world = flow
            .destination
            .as_ref()
            .is_some_and(|d| d.labels.iter().any(|l| l == "reserved:world"));
        if !to_world || super::is_policy_verdict(flow) {
            return;
        }
        let dropped = flow.verdict == pb::Verdict::Dropped as i32;
        if !dropped && flow.verdict != pb::Verdict::Forwarded as i32 {
            return;
        }
        if dropped && !self.any_drop && flow.drop_reason_desc != pb::DropReason::PolicyDenied as i32
        {
            return;
        }
        let l4 = flow.l4.as_ref().and_then(|l| l.protocol.as_ref());
        if self.syn_only {
            let syn = match l4 {
                Some(Protocol::Tcp(t)) => t.flags.as_ref().is_some_and(|f| f.syn && !f.ack),
                _ => true,
            };
            if !syn || flow.is_reply.as_ref().is_some_and(|r| r.value) {
                return;
            }
        }
        let mut fixed = vec![
            ("protocol", protocol(flow).to_string()),
            ("verdict", verdict(flow).to_string()),
        ];
        if self.port {
            let port = match l4 {
                Some(Protocol::Tcp(t)) => t.destination_port,
                Some(Protocol::Udp(u)) => u.destination_port,
                _ => 0,
            };
            fixed.push(("port", port.to_string()));
        }
        let labels = with_context(&fixed, &self.ctx, flow, extra);
        self.flows.get_or_create(&labels).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MetricSpec;
    use crate::metrics::testing::{dropped, flow_between, has_line, scrape};

    fn ctx(text: &str) -> ContextOptions {
        ContextOptions::from_spec(&MetricSpec::parse(text).expect("spec"))
    }

    #[test]
    fn flows_processed_by_type_subtype_verdict() {
        let mut registry = Registry::default();
        let h = FlowHandler::register(&mut registry, ctx("flow:sourceContext=namespace"));
        h.process(&flow_between());
        h.process(&flow_between());
        h.process(&dropped(pb::DropReason::PolicyDenied));
        let text = scrape(&registry);
        for line in [
            "hubble_flows_processed_total{protocol=\"TCP\",type=\"Trace\",subtype=\"from-endpoint\",verdict=\"FORWARDED\",source=\"shop\"} 2",
            "hubble_flows_processed_total{protocol=\"TCP\",type=\"Drop\",subtype=\"\",verdict=\"DROPPED\",source=\"shop\"} 1",
        ] {
            assert!(has_line(&text, line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn drops_by_reason_and_protocol_only() {
        let mut registry = Registry::default();
        let h = DropHandler::register(
            &mut registry,
            ctx("drop:labelsContext=source_namespace,destination_namespace"),
        );
        h.process(&flow_between());
        h.process(&dropped(pb::DropReason::CtTruncatedOrInvalidHeader));
        let text = scrape(&registry);
        assert!(
            has_line(
                &text,
                "hubble_drop_total{reason=\"CT_TRUNCATED_OR_INVALID_HEADER\",protocol=\"TCP\",source_namespace=\"shop\",destination_namespace=\"\"} 1"
            ),
            "{text}"
        );
        assert_eq!(text.matches("hubble_drop_total{").count(), 1, "{text}");
    }

    #[test]
    fn flows_to_world_follow_ciliums_options() {
        let mut registry = Registry::default();
        let h = WorldHandler::register(&mut registry, ctx("flows-to-world"), &[]);
        h.process(&flow_between());
        h.process(&dropped(pb::DropReason::PolicyDenied));
        // Not policy: not counted without any-drop.
        h.process(&dropped(pb::DropReason::CtTruncatedOrInvalidHeader));
        let mut inside = flow_between();
        inside.destination = None;
        h.process(&inside);
        let text = scrape(&registry);
        assert!(has_line(
            &text,
            "hubble_flows_to_world_total{protocol=\"TCP\",verdict=\"FORWARDED\"} 1"
        ));
        assert!(
            has_line(
                &text,
                "hubble_flows_to_world_total{protocol=\"TCP\",verdict=\"DROPPED\"} 1"
            ),
            "{text}"
        );

        let mut registry = Registry::default();
        let flags = ["any-drop", "port", "syn-only"].map(String::from);
        let h = WorldHandler::register(&mut registry, ctx("flows-to-world"), &flags);
        h.process(&dropped(pb::DropReason::CtTruncatedOrInvalidHeader));
        let mut ack = flow_between();
        if let Some(Protocol::Tcp(t)) = ack.l4.as_mut().and_then(|l| l.protocol.as_mut()) {
            t.flags = Some(pb::TcpFlags {
                ack: true,
                ..Default::default()
            });
        }
        h.process(&ack);
        let text = scrape(&registry);
        assert!(
            has_line(
                &text,
                "hubble_flows_to_world_total{protocol=\"TCP\",verdict=\"DROPPED\",port=\"443\"} 1"
            ),
            "{text}"
        );
        assert!(!text.contains("FORWARDED"), "{text}");
    }
}
