//! `dns` and `policy`: registered with Cilium's names and help so dashboards
//! find them, without series until DNS and policy verdict events exist (HTTP
//! metrics: http.rs).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::Labels;
use crate::MetricSpec;

type Counters = Family<Labels, Counter>;

/// Register the metrics of `spec`; returns their names (as exposed, without
/// the `_total` suffix of counters).
pub fn register(registry: &mut Registry, spec: &MetricSpec) -> Vec<&'static str> {
    match spec.name.as_str() {
        "dns" => {
            registry.register(
                "hubble_dns_queries",
                "Number of DNS queries observed",
                Counters::default(),
            );
            registry.register(
                "hubble_dns_responses",
                "Number of DNS responses observed",
                Counters::default(),
            );
            registry.register(
                "hubble_dns_response_types",
                "Number of DNS response types",
                Counters::default(),
            );
            vec![
                "hubble_dns_queries",
                "hubble_dns_responses",
                "hubble_dns_response_types",
            ]
        }
        "policy" => {
            registry.register(
                "hubble_policy_verdicts",
                "Number of policy verdict events",
                Counters::default(),
            );
            vec!["hubble_policy_verdicts"]
        }
        _ => Vec::new(),
    }
}
