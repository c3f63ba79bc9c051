//! `policy`: `hubble_policy_verdicts_total{direction,match,action}`, Cilium's count of
//! policy verdicts: each new connection a policy allowed (or audited), each connection a
//! policy refused, and each L7 verdict of the proxies (`match` `l7/http`, `l7/dns`).
//!
//! Cilium counts its policy verdict events, which it emits for allowed and refused
//! connections alike. Porin's datapath emits policy verdict events for allowed and audited
//! connections only and reports a refused one by its drop (reason 133 or 181, with the deny
//! rule's match type), so drops by policy count here as `action="dropped"`.

use hubble_proto::flow::{self as pb, Flow};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::{ContextOptions, Handler, Labels, with_context};
use crate::flow::{MESSAGE_TYPE_DROP, MESSAGE_TYPE_POLICY_VERDICT};

/// Cilium's monitor message type of L7 records.
const MESSAGE_TYPE_ACCESS_LOG: i32 = 129;

/// Cilium's `PolicyMatchType` names (lower-cased in the `match` label).
pub fn match_type_name(match_type: u32) -> &'static str {
    match match_type {
        1 => "L3-Only",
        2 => "L3-L4",
        3 => "L4-Only",
        4 => "all",
        5 => "L3-Proto",
        6 => "Proto-Only",
        _ => "none",
    }
}

/// Counts policy verdicts.
pub struct PolicyHandler {
    verdicts: Family<Labels, Counter>,
    ctx: ContextOptions,
}

impl PolicyHandler {
    pub fn register(registry: &mut Registry, ctx: ContextOptions) -> Self {
        let verdicts = Family::default();
        registry.register(
            "hubble_policy_verdicts",
            "Number of policy verdict events",
            verdicts.clone(),
        );
        ctx.watch(&verdicts);
        Self { verdicts, ctx }
    }
}

impl Handler for PolicyHandler {
    fn name(&self) -> &'static str {
        "hubble_policy_verdicts"
    }

    fn process_with(&self, flow: &Flow, extra: &[(String, String)]) {
        let Some(kind) = flow.event_type.as_ref().map(|e| e.r#type) else {
            return;
        };
        let policy_drop = kind == MESSAGE_TYPE_DROP
            && (flow.drop_reason_desc == pb::DropReason::PolicyDenied as i32
                || flow.drop_reason_desc == pb::DropReason::PolicyDeny as i32);
        let matched = match kind {
            MESSAGE_TYPE_POLICY_VERDICT => match_type_name(flow.policy_match_type).to_lowercase(),
            _ if policy_drop => match_type_name(flow.policy_match_type).to_lowercase(),
            MESSAGE_TYPE_ACCESS_LOG => {
                use pb::layer7::Record;
                match flow.l7.as_ref().and_then(|l| l.record.as_ref()) {
                    Some(Record::Http(_)) => "l7/http".to_string(),
                    Some(Record::Dns(_)) => "l7/dns".to_string(),
                    None => return,
                }
            }
            _ => return,
        };
        let direction = pb::TrafficDirection::try_from(flow.traffic_direction)
            .map_or("traffic_direction_unknown", |d| d.as_str_name())
            .to_lowercase();
        let action = pb::Verdict::try_from(flow.verdict)
            .map_or("verdict_unknown", |v| v.as_str_name())
            .to_lowercase();
        let labels = with_context(
            &[
                ("direction", direction),
                ("match", matched),
                ("action", action),
            ],
            &self.ctx,
            flow,
            extra,
        );
        self.verdicts.get_or_create(&labels).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::testing::{dropped, flow_between, has_line, scrape};
    use crate::metrics::{HubbleMetrics, MetricSpec};

    #[test]
    fn verdicts_and_policy_drops_count_by_direction_match_and_action() {
        let mut registry = Registry::default();
        let spec = MetricSpec::parse("policy").expect("spec");
        let m = HubbleMetrics::register(&[spec], &mut registry).expect("register");
        let mut allowed = flow_between();
        allowed.event_type = Some(pb::CiliumEventType {
            r#type: MESSAGE_TYPE_POLICY_VERDICT,
            sub_type: 0,
        });
        allowed.policy_match_type = 2;
        allowed.traffic_direction = pb::TrafficDirection::Egress as i32;
        m.process(&allowed);
        m.process(&allowed);
        let mut denied = dropped(pb::DropReason::PolicyDenied);
        denied.traffic_direction = pb::TrafficDirection::Ingress as i32;
        m.process(&denied);
        // Trace events and other drops are not policy verdicts.
        m.process(&flow_between());
        m.process(&dropped(pb::DropReason::CtMapInsertionFailed));
        let text = scrape(&registry);
        assert!(
            has_line(
                &text,
                r#"hubble_policy_verdicts_total{direction="egress",match="l3-l4",action="forwarded"} 2"#
            ),
            "{text}"
        );
        assert!(
            has_line(
                &text,
                r#"hubble_policy_verdicts_total{direction="ingress",match="none",action="dropped"} 1"#
            ),
            "{text}"
        );
        assert_eq!(
            text.matches("hubble_policy_verdicts_total{").count(),
            2,
            "{text}"
        );
    }
}
