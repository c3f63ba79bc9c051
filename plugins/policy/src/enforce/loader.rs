//! Policy objects from the cluster state, parsed, with their last good version: a policy
//! that becomes invalid keeps being enforced as it was before, and the problem is reported
//! with object and field; other policies are not affected.

use std::collections::BTreeMap;

use porin_plugin_sdk::PolicyValidity;
use serde_json::Value;

use super::desired::datapath_problems;
use crate::model::Policy;
use crate::parse::{Location, parse_document};

/// The policies in force and the last good version of each.
#[derive(Debug, Default)]
pub struct Loader {
    last_good: BTreeMap<String, Policy>,
}

/// The result of one load.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The policies to enforce: the current version of valid ones, the last good version of
    /// broken ones.
    pub policies: Vec<Policy>,
    /// One message per problem, naming object and field.
    pub problems: Vec<String>,
    /// Every object and whether it parsed (its problems), for its status condition.
    pub validity: Vec<PolicyValidity>,
}

/// Kind, namespace and name of a document.
fn object_key(doc: &Value) -> (String, String, String) {
    let field = |path: &[&str]| {
        path.iter()
            .try_fold(doc, |v, k| v.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    (
        field(&["kind"]),
        field(&["metadata", "namespace"]),
        field(&["metadata", "name"]),
    )
}

/// `Kind namespace/name` of a document, its identity across versions.
fn object_name(doc: &Value) -> String {
    let (kind, ns, name) = object_key(doc);
    if ns.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {ns}/{name}")
    }
}

impl Loader {
    /// Parses every document; deleted objects are forgotten.
    pub fn load(&mut self, documents: &[Value]) -> Loaded {
        let mut out = Loaded::default();
        let mut next = BTreeMap::new();
        for doc in documents {
            let name = object_name(doc);
            let at = Location {
                file: name.clone(),
                document: 1,
                object: None,
            };
            let parsed = parse_document(&at, doc).map_err(|errors| {
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<String>>()
            });
            let checked = parsed.and_then(|p| {
                let problems = datapath_problems(&p);
                if problems.is_empty() {
                    Ok(p)
                } else {
                    Err(problems)
                }
            });
            let (kind, namespace, object) = object_key(doc);
            out.validity.push(PolicyValidity {
                kind,
                namespace: (!namespace.is_empty()).then_some(namespace),
                name: object,
                problems: checked.as_ref().err().cloned().unwrap_or_default(),
            });
            match checked {
                Ok(policy) => {
                    next.insert(name, policy);
                }
                Err(problems) => {
                    let kept = self.last_good.remove(&name);
                    let suffix = if kept.is_some() {
                        "; the previous version stays enforced"
                    } else {
                        "; not enforced"
                    };
                    out.problems
                        .extend(problems.into_iter().map(|p| format!("{p}{suffix}")));
                    if let Some(policy) = kept {
                        next.insert(name, policy);
                    }
                }
            }
        }
        self.last_good = next;
        out.policies = self.last_good.values().cloned().collect();
        out
    }
}
