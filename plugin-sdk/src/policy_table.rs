//! Which policy a policy map entry stands for: the policy plugin writes a short id
//! (`policy_id`) into every entry, the datapath copies the deciding entry's id into its
//! flow events, and the policy plugin publishes the table that names the ids, so the
//! observe plugin can fill Hubble's `*_allowed_by` and `*_denied_by`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// One policy as flows name it (Hubble's `flow.Policy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInfo {
    pub name: String,
    /// Empty for cluster-wide policies.
    pub namespace: String,
    /// `CiliumNetworkPolicy`, `CiliumClusterwideNetworkPolicy` or `NetworkPolicy`.
    pub kind: String,
    /// Cilium's labels of a policy derived from a Kubernetes object:
    /// `k8s:io.cilium.k8s.policy.derived-from=KIND`, `k8s:io.cilium.k8s.policy.name=NAME`,
    /// `k8s:io.cilium.k8s.policy.namespace=NS` (namespaced kinds only).
    pub labels: Vec<String>,
    /// The policy plugin's revision when the table was published.
    pub revision: u64,
}

impl PolicyInfo {
    /// A policy of `kind` with Cilium's derived labels.
    pub fn new(kind: &str, namespace: Option<&str>, name: &str, revision: u64) -> Self {
        let mut labels = vec![
            format!("k8s:io.cilium.k8s.policy.derived-from={kind}"),
            format!("k8s:io.cilium.k8s.policy.name={name}"),
        ];
        if let Some(ns) = namespace {
            labels.push(format!("k8s:io.cilium.k8s.policy.namespace={ns}"));
        }
        Self {
            name: name.to_string(),
            namespace: namespace.unwrap_or_default().to_string(),
            kind: kind.to_string(),
            labels,
            revision,
        }
    }
}

/// Policy id -> policy, for every policy in force when it was published.
pub type PolicyTable = HashMap<u32, PolicyInfo>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_labels_follow_cilium() {
        let p = PolicyInfo::new(
            "CiliumNetworkPolicy",
            Some("payments"),
            "payments-egress",
            3,
        );
        assert_eq!(
            p.labels,
            [
                "k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy",
                "k8s:io.cilium.k8s.policy.name=payments-egress",
                "k8s:io.cilium.k8s.policy.namespace=payments",
            ]
        );
        let c = PolicyInfo::new("CiliumClusterwideNetworkPolicy", None, "require-mtls", 1);
        assert_eq!((c.namespace.as_str(), c.labels.len()), ("", 2));
    }
}
