//! Hubble metrics (`hubble_*`) from the flows the pipeline produces, configured
//! by `[plugins.observe] metrics` in Cilium's option syntax and served on
//! `metrics_address` (`:9965`) as OpenMetrics.
//!
//! Each enabled metric is a [`Handler`] registered into one prometheus-client
//! registry; the pipeline hands every flow to every handler. Label sets are
//! dynamic (fixed labels, then the context labels the options ask for), so
//! series are `Vec<(String, String)>` label sets.

mod context;
mod dns;
mod http;
mod l4;
pub mod lost;
pub mod pod_series;
mod policy;
mod server;
mod verdicts;

use hubble_proto::flow::Flow;
use prometheus_client::registry::Registry;
use thiserror::Error;
use tracing::warn;

pub use context::{ContextOptions, endpoint_context};
pub use dns::rcode_name;
pub use lost::LostEvents;
pub use policy::match_type_name;
pub use server::{MetricsServeError, OPENMETRICS_CONTENT_TYPE, metrics_router, serve_metrics};

use crate::MetricSpec;

/// A series' labels, in exposition order.
pub type Labels = Vec<(String, String)>;

/// One enabled metric: counts what it cares about in each flow.
pub trait Handler: Send + Sync {
    /// The metric's name as registered.
    fn name(&self) -> &'static str;
    /// Count `flow`; `extra` are labels added by WASM labellers, appended to
    /// every series.
    fn process_with(&self, flow: &Flow, extra: &[(String, String)]);
    fn process(&self, flow: &Flow) {
        self.process_with(flow, &[]);
    }
}

/// A `metrics` list that cannot be served.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MetricsConfigError {
    #[error("metric `{0}` is enabled twice")]
    Duplicate(String),
    #[error("`http` and `httpV2` register the same metrics: enable one of them")]
    HttpAndHttpV2,
}

/// The enabled Hubble metrics.
pub struct HubbleMetrics {
    handlers: Vec<Box<dyn Handler>>,
    /// Every registered metric name (counters without `_total`).
    names: Vec<&'static str>,
    /// Series naming pods, removed a minute after their pods.
    series: pod_series::PodSeries,
}

impl std::fmt::Debug for HubbleMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubbleMetrics")
            .field("handlers", &self.handlers.len())
            .finish()
    }
}

impl HubbleMetrics {
    /// Register every metric of `specs` into `registry`.
    pub fn register(
        specs: &[MetricSpec],
        registry: &mut Registry,
    ) -> Result<Self, MetricsConfigError> {
        let mut handlers: Vec<Box<dyn Handler>> = Vec::new();
        let series = pod_series::PodSeries::default();
        let mut names = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            if specs[..i].iter().any(|s| s.name == spec.name) {
                return Err(MetricsConfigError::Duplicate(spec.name.clone()));
            }
            let is_http = |s: &MetricSpec| s.name == "http" || s.name == "httpV2";
            if is_http(spec) && specs[..i].iter().any(is_http) {
                return Err(MetricsConfigError::HttpAndHttpV2);
            }
            if spec.exemplars && !is_http(spec) {
                warn!(
                    metric = %spec.name,
                    "exemplars are only attached to http metrics; option ignored"
                );
            }
            let ctx = ContextOptions::from_spec(spec).with_series(series.clone());
            let handler: Box<dyn Handler> = match spec.name.as_str() {
                "flow" => Box::new(verdicts::FlowHandler::register(registry, ctx)),
                "drop" => Box::new(verdicts::DropHandler::register(registry, ctx)),
                "flows-to-world" => {
                    Box::new(verdicts::WorldHandler::register(registry, ctx, &spec.flags))
                }
                "tcp" => Box::new(l4::TcpHandler::register(registry, ctx)),
                "port-distribution" => Box::new(l4::PortHandler::register(registry, ctx)),
                "icmp" => Box::new(l4::IcmpHandler::register(registry, ctx)),
                "dns" => {
                    let h = dns::DnsHandler::register(registry, spec, ctx);
                    names.extend(h.names());
                    handlers.push(Box::new(h));
                    continue;
                }
                "http" | "httpV2" => {
                    let h = http::HttpHandler::register(registry, spec, ctx);
                    names.extend(h.names());
                    handlers.push(Box::new(h));
                    continue;
                }
                "policy" => Box::new(policy::PolicyHandler::register(registry, ctx)),
                // MetricSpec::parse refuses other names.
                _ => continue,
            };
            names.push(handler.name());
            handlers.push(handler);
        }
        Ok(Self {
            handlers,
            names,
            series,
        })
    }

    /// The registered metric names (counters without their `_total` suffix).
    /// Metrics without series yet are not in the exposition at all.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// The series that name pods (the plugin sweeps them against the pods that exist).
    pub fn pod_series(&self) -> pod_series::PodSeries {
        self.series.clone()
    }

    /// Count one flow in every enabled metric.
    pub fn process(&self, flow: &Flow) {
        self.process_labelled(flow, &[]);
    }

    /// Count one flow with the labels WASM labellers gave it.
    pub fn process_labelled(&self, flow: &Flow, extra: &[(String, String)]) {
        for h in &self.handlers {
            h.process_with(flow, extra);
        }
    }
}

/// `labels` followed by the context labels of `flow` and the labellers' `extra`.
fn with_context(
    fixed: &[(&str, String)],
    ctx: &ContextOptions,
    flow: &Flow,
    extra: &[(String, String)],
) -> Labels {
    let mut labels: Labels = fixed
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect();
    labels.extend(ctx.values(flow));
    labels.extend_from_slice(extra);
    ctx.record(flow, &labels);
    labels
}

/// Hubble's protocol label of a flow (`TCP`, `UDP`, `ICMPv4`, `ICMPv6`).
fn protocol(flow: &Flow) -> &'static str {
    use hubble_proto::flow::layer4::Protocol;
    match flow.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Tcp(_)) => "TCP",
        Some(Protocol::Udp(_)) => "UDP",
        Some(Protocol::IcmPv4(_)) => "ICMPv4",
        Some(Protocol::IcmPv6(_)) => "ICMPv6",
        _ => "Unknown flow",
    }
}

/// Whether `flow` is a policy verdict: it repeats the connection's trace event, so the
/// metrics that count connections or packets (tcp, port-distribution, icmp,
/// flows-to-world) skip it; `flow` counts it under `type="PolicyVerdict"` and `policy` is
/// made of it.
fn is_policy_verdict(flow: &Flow) -> bool {
    flow.event_type
        .as_ref()
        .is_some_and(|e| e.r#type == crate::flow::MESSAGE_TYPE_POLICY_VERDICT)
}

/// Hubble's `family` label (`IPv4`, `IPv6`).
fn family(flow: &Flow) -> Option<&'static str> {
    use hubble_proto::flow::IpVersion;
    match IpVersion::try_from(flow.ip.as_ref()?.ip_version) {
        Ok(IpVersion::IPv4) => Some("IPv4"),
        Ok(IpVersion::IPv6) => Some("IPv6"),
        _ => None,
    }
}

/// Hand-made flows for the handlers' tests.
#[cfg(test)]
pub(crate) mod testing {
    use hubble_proto::BoolValue;
    use hubble_proto::flow::{self as pb, layer4::Protocol};
    use prometheus_client::registry::Registry;

    /// `web-1` (shop, Deployment web) to the world on TCP 443, a SYN sent.
    pub fn flow_between() -> pb::Flow {
        pb::Flow {
            verdict: pb::Verdict::Forwarded as i32,
            ip: Some(pb::Ip {
                source: "10.200.1.5".to_string(),
                destination: "1.1.1.1".to_string(),
                ip_version: pb::IpVersion::IPv4 as i32,
                encrypted: false,
            }),
            l4: Some(pb::Layer4 {
                protocol: Some(Protocol::Tcp(pb::Tcp {
                    source_port: 40000,
                    destination_port: 443,
                    flags: Some(pb::TcpFlags {
                        syn: true,
                        ..Default::default()
                    }),
                })),
            }),
            source: Some(pb::Endpoint {
                id: 7,
                identity: 1234,
                namespace: "shop".to_string(),
                labels: vec![
                    "k8s:app=web".to_string(),
                    "k8s:io.kubernetes.pod.namespace=shop".to_string(),
                ],
                pod_name: "web-1".to_string(),
                workloads: vec![pb::Workload {
                    name: "web".to_string(),
                    kind: "Deployment".to_string(),
                }],
            }),
            destination: Some(pb::Endpoint {
                identity: 2,
                labels: vec!["reserved:world".to_string()],
                ..Default::default()
            }),
            destination_names: vec!["one.one.one.one".to_string()],
            r#type: pb::FlowType::L3L4 as i32,
            event_type: Some(pb::CiliumEventType {
                r#type: crate::flow::MESSAGE_TYPE_TRACE,
                sub_type: crate::flow::TRACE_FROM_LXC,
            }),
            traffic_direction: pb::TrafficDirection::Egress as i32,
            is_reply: Some(BoolValue { value: false }),
            ..Default::default()
        }
    }

    /// The same flow dropped for `reason`.
    pub fn dropped(reason: pb::DropReason) -> pb::Flow {
        pb::Flow {
            verdict: pb::Verdict::Dropped as i32,
            drop_reason: reason as u32,
            drop_reason_desc: reason as i32,
            event_type: Some(pb::CiliumEventType {
                r#type: crate::flow::MESSAGE_TYPE_DROP,
                sub_type: reason as i32,
            }),
            ..flow_between()
        }
    }

    /// The text exposition of `registry`.
    pub fn scrape(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).expect("encode");
        out
    }

    /// Whether `text` has exactly `line`.
    pub fn has_line(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    fn specs(list: &[&str]) -> Vec<MetricSpec> {
        list.iter()
            .map(|s| MetricSpec::parse(s).expect("spec"))
            .collect()
    }

    #[test]
    fn the_seed_articles_list_registers_with_cilium_names() {
        let mut registry = Registry::default();
        let m = HubbleMetrics::register(
            &specs(&[
                "dns",
                "drop",
                "tcp",
                "flow",
                "port-distribution",
                "icmp",
                "flows-to-world",
                "httpV2:exemplars=true;labelsContext=source_ip,source_namespace,source_workload,destination_ip,destination_namespace,destination_workload,traffic_direction",
            ]),
            &mut registry,
        )
        .expect("valid");
        m.process(&flow_between());
        m.process(&dropped(hubble_proto::flow::DropReason::PolicyDenied));
        let text = scrape(&registry);
        for name in [
            "hubble_flows_processed",
            "hubble_drop",
            "hubble_tcp_flags",
            "hubble_port_distribution",
            "hubble_flows_to_world",
        ] {
            assert!(
                has_line(&text, &format!("# TYPE {name} counter")),
                "{name} missing:\n{text}"
            );
        }
        // DNS and HTTP metrics are registered under Cilium's names and have
        // series once L7 flows of the proxies come.
        for name in [
            "hubble_dns_queries",
            "hubble_dns_responses",
            "hubble_dns_response_types",
        ] {
            assert!(m.names().contains(&name), "{name} not in {:?}", m.names());
            assert!(!text.contains(name), "{name} has series:\n{text}");
        }
        for name in [
            "hubble_http_requests",
            "hubble_http_request_duration_seconds",
        ] {
            assert!(m.names().contains(&name), "{name} not in {:?}", m.names());
        }
        assert!(m.names().contains(&"hubble_icmp"));
        assert_eq!(m.names().len(), 11);
    }

    #[test]
    fn duplicates_and_both_http_versions_are_refused() {
        let mut registry = Registry::default();
        assert_eq!(
            HubbleMetrics::register(&specs(&["drop", "drop"]), &mut registry).err(),
            Some(MetricsConfigError::Duplicate("drop".to_string()))
        );
        let mut registry = Registry::default();
        assert_eq!(
            HubbleMetrics::register(&specs(&["http", "httpV2"]), &mut registry).err(),
            Some(MetricsConfigError::HttpAndHttpV2)
        );
    }
}
