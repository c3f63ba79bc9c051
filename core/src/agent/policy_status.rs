//! Policy objects' `Valid` status condition: the policy plugin reports whether each
//! CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy parsed, and core writes the
//! outcome through the datastore (the status subresource in Kubernetes; nothing with a
//! manifest directory). Only changes are written; a failed write is retried on the next
//! report.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use porin_plugin_sdk::PolicyValidity;
use tracing::warn;

use super::run::lock;
use crate::state::cilium_types::{POLICY_CONDITION_VALID, PolicyCondition};
use crate::state::{Datastore, Kind, ObjectKey};

/// What was last written for each policy object: its problems joined ("" when valid).
type Written = Arc<Mutex<BTreeMap<ObjectKey, String>>>;

/// Writes policy conditions through a datastore.
#[derive(Clone)]
pub struct PolicyConditions {
    datastore: Arc<dyn Datastore>,
    written: Written,
}

impl PolicyConditions {
    pub fn new(datastore: Arc<dyn Datastore>) -> Self {
        Self {
            datastore,
            written: Written::default(),
        }
    }

    /// Writes the outcomes that changed; forgets objects no longer reported (deleted), so
    /// one created again gets its condition.
    pub fn report(&self, all: &[PolicyValidity]) {
        let mut changed = Vec::new();
        {
            let mut written = lock(&self.written);
            let mut present = BTreeMap::new();
            for v in all {
                let Some(key) = key_of(v) else { continue };
                let message = v.problems.join("; ");
                if written.get(&key) != Some(&message) {
                    changed.push((key.clone(), condition(&message)));
                }
                present.insert(key, message);
            }
            *written = present;
        }
        if changed.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let datastore = self.datastore.clone();
        let written = self.written.clone();
        runtime.spawn(async move {
            for (key, condition) in changed {
                if let Err(e) = datastore
                    .write_policy_condition(key.clone(), condition)
                    .await
                {
                    warn!(%key, error = %e, "writing the policy's Valid condition");
                    lock(&written).remove(&key);
                }
            }
        });
    }
}

fn key_of(v: &PolicyValidity) -> Option<ObjectKey> {
    let (kind, namespace) = match v.kind.as_str() {
        "CiliumNetworkPolicy" => (Kind::CiliumNetworkPolicy, v.namespace.clone()),
        "CiliumClusterwideNetworkPolicy" => (Kind::CiliumClusterwideNetworkPolicy, None),
        _ => return None,
    };
    Some(ObjectKey {
        kind,
        namespace,
        name: v.name.clone(),
    })
}

/// `Valid=True` (reason `Parsed`) for "", else `Valid=False` (reason `ParseError`) with the
/// problems as message.
fn condition(problems: &str) -> PolicyCondition {
    let valid = problems.is_empty();
    PolicyCondition {
        kind: POLICY_CONDITION_VALID.to_owned(),
        status: if valid { "True" } else { "False" }.to_owned(),
        last_transition_time: Some(k8s_openapi::jiff::Timestamp::now().to_string()),
        reason: Some(if valid { "Parsed" } else { "ParseError" }.to_owned()),
        message: (!valid).then(|| problems.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_say_why() {
        let ok = condition("");
        assert_eq!((ok.status.as_str(), ok.message), ("True", None));
        let bad = condition("spec.ingress[0].fromEndpointz: unknown field");
        assert_eq!(bad.status, "False");
        assert_eq!(bad.reason.as_deref(), Some("ParseError"));
        assert!(bad.message.is_some_and(|m| m.contains("fromEndpointz")));
        let np = PolicyValidity {
            kind: "NetworkPolicy".into(),
            namespace: Some("a".into()),
            name: "b".into(),
            problems: vec![],
        };
        assert!(
            key_of(&np).is_none(),
            "NetworkPolicy has no status conditions here"
        );
    }
}
