//! Context labels: `sourceContext`, `destinationContext` and `labelsContext`,
//! computed from a flow with Cilium's semantics.

use hubble_proto::flow::{Endpoint, Flow, TrafficDirection};

use prometheus_client::metrics::family::{Family, MetricConstructor};

use super::Labels;
use super::pod_series::{PodKey, PodSeries};
use crate::MetricSpec;

/// The context options of one metric.
#[derive(Debug, Clone, Default)]
pub struct ContextOptions {
    /// Alternatives for the `source` label, the first non-empty one wins.
    source: Vec<String>,
    /// Alternatives for the `destination` label.
    destination: Vec<String>,
    /// Extra labels named as in `labelsContext` (`source_namespace`, ...).
    labels: Vec<String>,
    /// Whether the labels name the source (destination) pod: its series go with it.
    names_source_pod: bool,
    names_destination_pod: bool,
    /// Where series naming pods are recorded, to be removed with their pods.
    series: PodSeries,
}

/// Context kinds and `labelsContext` fields whose values belong to one pod.
const POD_CONTEXTS: [&str; 3] = ["pod", "pod-name", "ip"];
const POD_LABEL_FIELDS: [&str; 2] = ["pod", "ip"];

impl ContextOptions {
    pub fn from_spec(spec: &MetricSpec) -> Self {
        let names_pod = |kinds: &[String], prefix: &str| {
            kinds.iter().any(|k| POD_CONTEXTS.contains(&k.as_str()))
                || spec.labels_context.iter().any(|l| {
                    l.strip_prefix(prefix)
                        .is_some_and(|f| POD_LABEL_FIELDS.contains(&f))
                })
        };
        Self {
            source: spec.source_context.clone(),
            destination: spec.destination_context.clone(),
            labels: spec.labels_context.clone(),
            names_source_pod: names_pod(&spec.source_context, "source_"),
            names_destination_pod: names_pod(&spec.destination_context, "destination_"),
            series: PodSeries::default(),
        }
    }

    /// The same options, recording pod series in `series` (shared by all metrics).
    pub fn with_series(mut self, series: PodSeries) -> Self {
        self.series = series;
        self
    }

    /// Series of `family` that name a pod are removed some time after the pod.
    pub fn watch<M, C>(&self, family: &Family<Labels, M, C>)
    where
        M: Send + Sync + 'static,
        C: MetricConstructor<M> + Clone + Send + Sync + 'static,
    {
        self.series.watch(family);
    }

    /// Records the pods `labels` (computed from `flow`) name.
    pub fn record(&self, flow: &Flow, labels: &Labels) {
        if !self.names_source_pod && !self.names_destination_pod {
            return;
        }
        let pod = |named: bool, ep: Option<&Endpoint>| {
            ep.filter(|e| named && !e.pod_name.is_empty())
                .map(|e| (e.namespace.clone(), e.pod_name.clone()))
        };
        let pods: Vec<PodKey> = [
            pod(self.names_source_pod, flow.source.as_ref()),
            pod(self.names_destination_pod, flow.destination.as_ref()),
        ]
        .into_iter()
        .flatten()
        .collect();
        self.series.record(&pods, labels);
    }

    /// The context labels of `flow`, in a fixed order: `source`, `destination`,
    /// then the `labelsContext` ones as configured.
    pub fn values(&self, flow: &Flow) -> Labels {
        let mut out = Labels::new();
        let ip = flow.ip.as_ref();
        let src_ip = ip.map(|i| i.source.as_str()).unwrap_or_default();
        let dst_ip = ip.map(|i| i.destination.as_str()).unwrap_or_default();
        if !self.source.is_empty() {
            let v = first_of(
                &self.source,
                flow.source.as_ref(),
                src_ip,
                &flow.source_names,
            );
            out.push(("source".to_string(), v));
        }
        if !self.destination.is_empty() {
            let v = first_of(
                &self.destination,
                flow.destination.as_ref(),
                dst_ip,
                &flow.destination_names,
            );
            out.push(("destination".to_string(), v));
        }
        for name in &self.labels {
            let value = labels_context_value(name, flow, src_ip, dst_ip);
            out.push((name.clone(), value));
        }
        out
    }
}

fn first_of(kinds: &[String], ep: Option<&Endpoint>, ip: &str, names: &[String]) -> String {
    kinds
        .iter()
        .map(|k| endpoint_context(k, ep, ip, names))
        .find(|v| !v.is_empty())
        .unwrap_or_default()
}

/// One `sourceContext`/`destinationContext` value of an endpoint.
pub fn endpoint_context(kind: &str, ep: Option<&Endpoint>, ip: &str, names: &[String]) -> String {
    let namespaced = |name: &str| match ep.map(|e| e.namespace.as_str()) {
        _ if name.is_empty() => String::new(),
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    };
    match kind {
        "identity" => ep.map(|e| e.labels.join(",")).unwrap_or_default(),
        "namespace" => ep.map(|e| e.namespace.clone()).unwrap_or_default(),
        "pod" => namespaced(ep.map(|e| e.pod_name.as_str()).unwrap_or_default()),
        "pod-name" => ep.map(|e| e.pod_name.clone()).unwrap_or_default(),
        "dns" => names.join(","),
        "ip" => ip.to_string(),
        "reserved-identity" => ep
            .and_then(|e| e.labels.iter().find(|l| l.starts_with("reserved:")))
            .cloned()
            .unwrap_or_default(),
        "workload" => namespaced(workload_name(ep)),
        "workload-name" => workload_name(ep).to_string(),
        "app" => app(ep),
        _ => String::new(),
    }
}

fn labels_context_value(name: &str, flow: &Flow, src_ip: &str, dst_ip: &str) -> String {
    if name == "traffic_direction" {
        return match TrafficDirection::try_from(flow.traffic_direction) {
            Ok(TrafficDirection::Ingress) => "ingress",
            Ok(TrafficDirection::Egress) => "egress",
            _ => "unknown",
        }
        .to_string();
    }
    let (ep, ip, field) = if let Some(field) = name.strip_prefix("source_") {
        (flow.source.as_ref(), src_ip, field)
    } else if let Some(field) = name.strip_prefix("destination_") {
        (flow.destination.as_ref(), dst_ip, field)
    } else {
        return String::new();
    };
    match field {
        "ip" => ip.to_string(),
        "namespace" => ep.map(|e| e.namespace.clone()).unwrap_or_default(),
        "pod" => ep.map(|e| e.pod_name.clone()).unwrap_or_default(),
        "workload" => workload_name(ep).to_string(),
        "workload_kind" => ep
            .and_then(|e| e.workloads.first())
            .map(|w| w.kind.clone())
            .unwrap_or_default(),
        "app" => app(ep),
        "label" => ep.map(|e| e.labels.join(",")).unwrap_or_default(),
        _ => String::new(),
    }
}

fn workload_name(ep: Option<&Endpoint>) -> &str {
    ep.and_then(|e| e.workloads.first())
        .map(|w| w.name.as_str())
        .unwrap_or_default()
}

/// The application name from the usual Kubernetes labels, most specific first.
fn app(ep: Option<&Endpoint>) -> String {
    const KEYS: [&str; 3] = ["k8s:app.kubernetes.io/name=", "k8s:k8s-app=", "k8s:app="];
    let Some(ep) = ep else {
        return String::new();
    };
    KEYS.iter()
        .find_map(|k| ep.labels.iter().find_map(|l| l.strip_prefix(k)))
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::testing::flow_between;

    fn opts(text: &str) -> ContextOptions {
        ContextOptions::from_spec(&MetricSpec::parse(text).expect("spec"))
    }

    fn get<'a>(labels: &'a Labels, name: &str) -> &'a str {
        labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no label {name} in {labels:?}"))
    }

    #[test]
    fn source_and_destination_contexts() {
        let flow = flow_between();
        for (option, source, destination) in [
            ("namespace", "shop", ""),
            ("pod", "shop/web-1", ""),
            ("pod-name", "web-1", ""),
            ("workload", "shop/web", ""),
            ("workload-name", "web", ""),
            ("app", "web", ""),
            ("ip", "10.200.1.5", "1.1.1.1"),
            (
                "identity",
                "k8s:app=web,k8s:io.kubernetes.pod.namespace=shop",
                "reserved:world",
            ),
            ("reserved-identity", "", "reserved:world"),
            ("dns", "", "one.one.one.one"),
            ("pod|reserved-identity", "shop/web-1", "reserved:world"),
        ] {
            let labels = opts(&format!(
                "flow:sourceContext={option};destinationContext={option}"
            ))
            .values(&flow);
            assert_eq!(get(&labels, "source"), source, "{option}");
            assert_eq!(get(&labels, "destination"), destination, "{option}");
        }
    }

    #[test]
    fn labels_context_names_and_values() {
        let flow = flow_between();
        let labels = opts(
            "flow:labelsContext=source_ip,source_namespace,source_pod,source_workload,\
             source_workload_kind,source_app,destination_ip,destination_namespace,traffic_direction",
        )
        .values(&flow);
        let names: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names[0], "source_ip");
        assert_eq!(names.len(), 9);
        for (name, value) in [
            ("source_ip", "10.200.1.5"),
            ("source_namespace", "shop"),
            ("source_pod", "web-1"),
            ("source_workload", "web"),
            ("source_workload_kind", "Deployment"),
            ("source_app", "web"),
            ("destination_ip", "1.1.1.1"),
            ("destination_namespace", ""),
            ("traffic_direction", "egress"),
        ] {
            assert_eq!(get(&labels, name), value, "{name}");
        }
        assert!(opts("flow").values(&flow).is_empty());
    }
}
