//! What `porin policy get` shows of one agent: the policies in force, a revision that
//! moves when they or their problems change, and the problems themselves.

use serde::Serialize;

use crate::Enforcement;
use crate::model::{Policy, PolicyRef};

/// The policy plugin's status document (`/v1/plugins/policy/status`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PolicyStatus {
    /// 1 after the first computation; increases whenever the policies in force or the
    /// problems change (like Cilium's policy repository revision).
    pub revision: u64,
    pub enforcement: Enforcement,
    pub policy_audit_mode: bool,
    /// Every policy enforced now: the current version of valid ones, the last good
    /// version of broken ones (their problem is in `errors`).
    pub policies: Vec<PolicyInForce>,
    /// Invalid policies (object and field) and map programming failures.
    pub errors: Vec<String>,
    /// Local endpoints the computation covered.
    pub endpoints: usize,
    /// Entries in this node's policy map.
    pub map_entries: usize,
}

/// One policy in force and how many rules (`spec` plus each of `specs`) it has.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyInForce {
    #[serde(flatten)]
    pub source: PolicyRef,
    pub rules: usize,
    /// The `policy_id` its map entries carry (and flow events name).
    pub id: u32,
}

impl PolicyStatus {
    /// The summary of `policies` that [`PolicyStatus::record`] takes.
    pub fn in_force(policies: &[Policy]) -> Vec<PolicyInForce> {
        policies
            .iter()
            .map(|p| PolicyInForce {
                source: p.source.clone(),
                rules: p.rules.len(),
                id: crate::enforce::desired::policy_id(&p.source),
            })
            .collect()
    }

    /// Records one computation; bumps the revision when what is in force changed.
    pub fn record(
        &mut self,
        in_force: Vec<PolicyInForce>,
        errors: Vec<String>,
        endpoints: usize,
        map_entries: usize,
    ) {
        if self.revision == 0 || in_force != self.policies || errors != self.errors {
            self.revision += 1;
        }
        self.policies = in_force;
        self.errors = errors;
        self.endpoints = endpoints;
        self.map_entries = map_entries;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_file;

    const ALLOW: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n\
metadata: {name: allow-web, namespace: shop}\n\
spec:\n  endpointSelector: {matchLabels: {app: web}}\n  ingress: [{fromEndpoints: [{}]}]\n";

    fn policies(text: &str) -> Vec<Policy> {
        let parsed = parse_file("allow.yaml", text);
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        parsed.policies
    }

    #[test]
    fn revision_moves_only_when_policies_or_problems_change() {
        let mut status = PolicyStatus::default();
        let allow = PolicyStatus::in_force(&policies(ALLOW));
        status.record(allow.clone(), vec![], 2, 10);
        assert_eq!(status.revision, 1);
        assert_eq!(status.policies.len(), 1);
        assert_eq!(status.policies[0].source.name, "allow-web");
        assert_eq!(status.policies[0].rules, 1);

        status.record(allow.clone(), vec![], 3, 12);
        assert_eq!(status.revision, 1, "same policies, same problems");
        assert_eq!(status.endpoints, 3);

        status.record(allow, vec!["broken".into()], 3, 12);
        assert_eq!(status.revision, 2, "a new problem");
        status.record(vec![], vec![], 3, 0);
        assert_eq!(status.revision, 3, "policy removed");
        let json = serde_json::to_value(&status).expect("serialize");
        assert_eq!(json["policies"], serde_json::json!([]));
        assert_eq!(json["enforcement"], "default");
    }
}
