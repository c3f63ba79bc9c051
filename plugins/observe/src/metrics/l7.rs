//! `policy`: registered with Cilium's name and help so dashboards find it,
//! without series until policy verdict events exist (HTTP metrics: http.rs,
//! DNS metrics: dns.rs).

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
