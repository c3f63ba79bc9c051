//! `dns`, `http`, `httpV2` and `policy`: registered with Cilium's names and help
//! so dashboards find them, without series until L7 and policy verdict events
//! exist in the datapath.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::{CounterWithExemplar, HistogramWithExemplars};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::Labels;
use crate::MetricSpec;

/// Prometheus' default buckets, which Cilium uses for request durations.
const DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

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
        "http" | "httpV2" => register_http(registry, spec),
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

/// With `exemplars=true` the HTTP metrics are the exemplar-carrying kinds, so
/// the trace ids of L7 flows will be exposed in OpenMetrics once they exist.
fn register_http(registry: &mut Registry, spec: &MetricSpec) -> Vec<&'static str> {
    let requests = "hubble_http_requests";
    let requests_help = "Count of HTTP requests";
    let duration = "hubble_http_request_duration_seconds";
    let duration_help = "Quantiles of HTTP request duration in seconds";
    if spec.exemplars {
        registry.register(
            requests,
            requests_help,
            Family::<Labels, CounterWithExemplar<Labels>>::default(),
        );
        registry.register(
            duration,
            duration_help,
            Family::<Labels, HistogramWithExemplars<Labels>>::new_with_constructor(|| {
                HistogramWithExemplars::new(DURATION_BUCKETS.into_iter())
            }),
        );
    } else {
        registry.register(requests, requests_help, Counters::default());
        registry.register(
            duration,
            duration_help,
            Family::<Labels, Histogram>::new_with_constructor(|| Histogram::new(DURATION_BUCKETS)),
        );
    }
    if spec.name == "http" {
        registry.register(
            "hubble_http_responses",
            "Count of HTTP responses",
            Counters::default(),
        );
        return vec![requests, duration, "hubble_http_responses"];
    }
    vec![requests, duration]
}
