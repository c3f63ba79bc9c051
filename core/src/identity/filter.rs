//! Which labels of a pod are security-relevant (Cilium's default label filter).
//!
//! Labels that change per pod instance (`pod-template-hash`, a StatefulSet's pod
//! name, a Job's controller uid) would give every pod its own identity and defeat
//! identity sharing, so they are dropped, as Cilium's default `--labels` does.

use std::collections::BTreeMap;

use super::{Label, Labels};

/// Cilium's label carrying the pod's namespace.
pub const NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Prefix of the namespace's own labels copied onto its pods.
pub const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";
/// The pod's service account.
pub const SERVICE_ACCOUNT_LABEL: &str = "io.cilium.k8s.policy.serviceaccount";
/// The cluster name.
pub const CLUSTER_LABEL: &str = "io.cilium.k8s.policy.cluster";

/// Keys dropped exactly.
const EXCLUDED_KEYS: [&str; 11] = [
    "pod-template-hash",
    "pod-template-generation",
    "controller-revision-hash",
    "controller-uid",
    "job-name",
    "etcd_node",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "batch.kubernetes.io/job-completion-index",
    "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-name",
];

/// Key prefixes dropped (Cilium: `!:io\.kubernetes`, `!:kubernetes\.io`,
/// `!:k8s\.io`, `!:annotation.*`).
const EXCLUDED_PREFIXES: [&str; 4] = ["io.kubernetes", "kubernetes.io", "k8s.io", "annotation"];

/// What the filter needs to know about a pod.
#[derive(Debug, Clone, Copy)]
pub struct PodLabelsInput<'a> {
    pub namespace: &'a str,
    pub pod_labels: &'a BTreeMap<String, String>,
    pub namespace_labels: &'a BTreeMap<String, String>,
    pub service_account: Option<&'a str>,
    /// Cluster name; Cilium's default is `default`.
    pub cluster: &'a str,
}

/// Whether a pod label key is kept for its identity.
pub fn is_security_relevant(key: &str) -> bool {
    if EXCLUDED_KEYS.contains(&key) {
        return false;
    }
    if key.contains("beta.kubernetes.io") {
        return false;
    }
    !EXCLUDED_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// The security labels of a pod, all with source `k8s`: its kept labels, its
/// namespace, its namespace's labels, its service account and its cluster.
pub fn security_labels(input: &PodLabelsInput<'_>) -> Labels {
    let mut labels: Labels = input
        .pod_labels
        .iter()
        .filter(|(k, _)| is_security_relevant(k))
        .map(|(k, v)| Label::k8s(k, v))
        .collect();
    labels.insert(Label::k8s(NAMESPACE_LABEL, input.namespace));
    for (k, v) in input.namespace_labels {
        labels.insert(Label::k8s(&format!("{NAMESPACE_LABELS_PREFIX}{k}"), v));
    }
    if let Some(sa) = input.service_account {
        labels.insert(Label::k8s(SERVICE_ACCOUNT_LABEL, sa));
    }
    let cluster = if input.cluster.is_empty() {
        "default"
    } else {
        input.cluster
    };
    labels.insert(Label::k8s(CLUSTER_LABEL, cluster));
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn per_instance_labels_are_dropped() {
        let pod = map(&[
            ("app", "web"),
            ("app.kubernetes.io/name", "web"),
            ("pod-template-hash", "5d4f"),
            ("controller-revision-hash", "abc"),
            ("pod-template-generation", "3"),
            ("statefulset.kubernetes.io/pod-name", "db-0"),
            ("batch.kubernetes.io/controller-uid", "u"),
            ("batch.kubernetes.io/job-name", "j"),
            ("controller-uid", "u"),
            ("job-name", "j"),
            ("io.kubernetes.container.name", "x"),
            ("kubernetes.io/hostname", "n"),
            ("failure-domain.beta.kubernetes.io/zone", "z"),
        ]);
        let ns = map(&[("kubernetes.io/metadata.name", "prod"), ("team", "a")]);
        let labels = security_labels(&PodLabelsInput {
            namespace: "prod",
            pod_labels: &pod,
            namespace_labels: &ns,
            service_account: Some("web-sa"),
            cluster: "",
        });
        assert_eq!(
            labels.to_strings(),
            vec![
                "k8s:app=web",
                "k8s:app.kubernetes.io/name=web",
                "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=prod",
                "k8s:io.cilium.k8s.namespace.labels.team=a",
                "k8s:io.cilium.k8s.policy.cluster=default",
                "k8s:io.cilium.k8s.policy.serviceaccount=web-sa",
                "k8s:io.kubernetes.pod.namespace=prod",
            ]
        );
    }
}
