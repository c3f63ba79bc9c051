//! `dns`: DNS queries and responses from the L7 flows of the policy plugin's DNS proxy,
//! with Cilium's names and labels.
//!
//! `hubble_dns_queries_total{rcode,qtypes,ips_returned}` counts requests (`rcode` and
//! `ips_returned` empty), `hubble_dns_responses_total{rcode,qtypes,ips_returned}`
//! responses (`rcode` by Cilium's names: `No Error`, `Non-Existent Domain`, `Query
//! Refused`, ...; `ips_returned` the number of addresses) and
//! `hubble_dns_response_types_total{type,qtypes}` each answer record type of a response.
//! Options: `query` adds the question's name as a `query` label; `ignoreAAAA` skips
//! flows of AAAA questions. Context labels follow, as for every metric.

use hubble_proto::flow::{Flow, L7FlowType, layer7::Record};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::{ContextOptions, Handler, Labels, with_context};
use crate::MetricSpec;

const QUERIES: &str = "hubble_dns_queries";
const RESPONSES: &str = "hubble_dns_responses";
const RESPONSE_TYPES: &str = "hubble_dns_response_types";

/// The DNS metrics of a `dns` spec.
pub struct DnsHandler {
    queries: Family<Labels, Counter>,
    responses: Family<Labels, Counter>,
    response_types: Family<Labels, Counter>,
    include_query: bool,
    ignore_aaaa: bool,
    ctx: ContextOptions,
}

impl DnsHandler {
    pub fn register(registry: &mut Registry, spec: &MetricSpec, ctx: ContextOptions) -> Self {
        let h = Self {
            queries: Family::default(),
            responses: Family::default(),
            response_types: Family::default(),
            include_query: spec.flags.iter().any(|f| f == "query"),
            ignore_aaaa: spec.flags.iter().any(|f| f == "ignoreAAAA"),
            ctx,
        };
        registry.register(QUERIES, "Number of DNS queries observed", h.queries.clone());
        registry.register(
            RESPONSES,
            "Number of DNS responses observed",
            h.responses.clone(),
        );
        registry.register(
            RESPONSE_TYPES,
            "Number of DNS response types",
            h.response_types.clone(),
        );
        h.ctx.watch(&h.queries);
        h.ctx.watch(&h.responses);
        h.ctx.watch(&h.response_types);
        h
    }

    /// The names registered (counters without `_total`).
    pub fn names(&self) -> Vec<&'static str> {
        vec![QUERIES, RESPONSES, RESPONSE_TYPES]
    }
}

/// Cilium's names of DNS response codes.
pub fn rcode_name(rcode: u32) -> String {
    match rcode {
        0 => "No Error".into(),
        1 => "Format Error".into(),
        2 => "Server Failure".into(),
        3 => "Non-Existent Domain".into(),
        4 => "Not Implemented".into(),
        5 => "Query Refused".into(),
        6 => "Name Exists when it should not".into(),
        7 => "RR Set Exists when it should not".into(),
        8 => "RR Set that should exist does not".into(),
        9 => "Server Not Authoritative for zone".into(),
        10 => "Name not contained in zone".into(),
        other => other.to_string(),
    }
}

impl Handler for DnsHandler {
    fn name(&self) -> &'static str {
        QUERIES
    }

    fn process_with(&self, flow: &Flow, extra: &[(String, String)]) {
        let Some(l7) = flow.l7.as_ref() else {
            return;
        };
        let Some(Record::Dns(dns)) = l7.record.as_ref() else {
            return;
        };
        if self.ignore_aaaa && dns.qtypes.iter().any(|q| q == "AAAA") {
            return;
        }
        let qtypes = dns.qtypes.join(",");
        let query = self.include_query.then(|| ("query", dns.query.clone()));
        if l7.r#type == L7FlowType::Request as i32 {
            let mut fixed = vec![
                ("rcode", String::new()),
                ("qtypes", qtypes),
                ("ips_returned", String::new()),
            ];
            fixed.extend(query);
            self.queries
                .get_or_create(&with_context(&fixed, &self.ctx, flow, extra))
                .inc();
        } else if l7.r#type == L7FlowType::Response as i32 {
            let mut fixed = vec![
                ("rcode", rcode_name(dns.rcode)),
                ("qtypes", qtypes.clone()),
                ("ips_returned", dns.ips.len().to_string()),
            ];
            fixed.extend(query);
            self.responses
                .get_or_create(&with_context(&fixed, &self.ctx, flow, extra))
                .inc();
            for rrtype in &dns.rrtypes {
                let fixed = [("type", rrtype.clone()), ("qtypes", qtypes.clone())];
                self.response_types
                    .get_or_create(&with_context(&fixed, &self.ctx, flow, extra))
                    .inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::testing::{flow_between, has_line, scrape};
    use hubble_proto::flow as pb;

    fn dns_flow(kind: L7FlowType, rcode: u32, ips: &[&str], qtype: &str) -> Flow {
        Flow {
            r#type: pb::FlowType::L7 as i32,
            l7: Some(pb::Layer7 {
                r#type: kind as i32,
                latency_ns: 1000,
                record: Some(Record::Dns(pb::Dns {
                    query: "api.example.com.".into(),
                    ips: ips.iter().map(|s| (*s).to_owned()).collect(),
                    ttl: 30,
                    cnames: vec![],
                    observation_source: "proxy".into(),
                    rcode,
                    qtypes: vec![qtype.into()],
                    rrtypes: if ips.is_empty() {
                        vec![]
                    } else {
                        vec![qtype.into()]
                    },
                })),
            }),
            ..flow_between()
        }
    }

    #[test]
    fn queries_responses_and_types_with_ciliums_labels() {
        let mut registry = Registry::default();
        let spec = MetricSpec::parse("dns:query;ignoreAAAA").expect("spec");
        let h = DnsHandler::register(&mut registry, &spec, ContextOptions::from_spec(&spec));
        h.process(&dns_flow(L7FlowType::Request, 0, &[], "A"));
        h.process(&dns_flow(L7FlowType::Response, 0, &["192.0.2.1"], "A"));
        h.process(&dns_flow(L7FlowType::Response, 5, &[], "A"));
        h.process(&dns_flow(L7FlowType::Request, 0, &[], "AAAA"));
        h.process(&flow_between());
        let text = scrape(&registry);
        for line in [
            "hubble_dns_queries_total{rcode=\"\",qtypes=\"A\",ips_returned=\"\",query=\"api.example.com.\"} 1",
            "hubble_dns_responses_total{rcode=\"No Error\",qtypes=\"A\",ips_returned=\"1\",query=\"api.example.com.\"} 1",
            "hubble_dns_responses_total{rcode=\"Query Refused\",qtypes=\"A\",ips_returned=\"0\",query=\"api.example.com.\"} 1",
            "hubble_dns_response_types_total{type=\"A\",qtypes=\"A\"} 1",
        ] {
            assert!(has_line(&text, line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("AAAA"), "ignoreAAAA: {text}");
    }
}
