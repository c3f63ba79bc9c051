//! Chooses between the incremental steps of [`Engine`] and a full computation: the
//! differences from the last inputs (identities, local endpoints and policies added,
//! removed or changed; a change is a removal and an addition) are applied one by one.
//! Other CIDR prefixes, proxy ports or another enforcement mode recompute everything,
//! and so do identities with named ports coming or going while a rule names a port at
//! egress (the name's number can change for every peer), and so do many policy removals
//! (the engine carries retired rules until a full computation starts it clean). Either
//! way the result equals a full computation from the same inputs (tested below, in
//! `incremental_tests`, `tests` and `bench`).

use std::collections::BTreeMap;

use super::desired::{Desired, EndpointInput, IdentityInput};
use super::engine::Engine;
use crate::Enforcement;
use crate::compute::CidrIdentities;
use crate::model::Policy;
use crate::proxy::ProxyPorts;

/// Everything the policy maps are computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    pub policies: Vec<Policy>,
    pub enforcement: Enforcement,
    pub endpoints: Vec<EndpointInput>,
    pub identities: Vec<IdentityInput>,
    pub cidrs: CidrIdentities,
    pub proxies: ProxyPorts,
}

/// How the last update was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Unchanged,
    Full,
    /// The differences applied incrementally.
    Incremental(Changes),
}

/// How many inputs of each kind an incremental step removed and added (a changed one
/// counts in both).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    pub identities_removed: usize,
    pub identities_added: usize,
    pub endpoints_removed: usize,
    pub endpoints_added: usize,
    pub policies_removed: usize,
    pub policies_added: usize,
}

/// The engine and the inputs it reflects.
#[derive(Default)]
pub struct Incremental {
    last: Option<(Inputs, Engine)>,
}

/// What `new` removes from and adds to `old`, by key; a changed item is in both.
struct Diff<'a, T> {
    removed: Vec<&'a T>,
    added: Vec<&'a T>,
}

fn diff<'a, T: PartialEq, K: Ord>(
    old: &'a [T],
    new: &'a [T],
    key: impl Fn(&T) -> K,
) -> Diff<'a, T> {
    let mut old_by_key: BTreeMap<K, &T> = old.iter().map(|t| (key(t), t)).collect();
    let mut removed = Vec::new();
    let mut added = Vec::new();
    for item in new {
        match old_by_key.remove(&key(item)) {
            Some(previous) if previous == item => {}
            Some(previous) => {
                removed.push(previous);
                added.push(item);
            }
            None => added.push(item),
        }
    }
    removed.extend(old_by_key.into_values());
    Diff { removed, added }
}

impl Incremental {
    /// Brings the maps to `inputs`, incrementally where possible.
    pub fn update(&mut self, inputs: Inputs) -> (Step, &Desired) {
        let step = match self.last.take() {
            Some((old, mut engine)) => match Self::apply(&old, &inputs, &mut engine) {
                // Many policy removals or edits: start clean rather than carry them.
                Some(Step::Incremental(_)) if engine.has_many_retired_rules() => {
                    self.full(inputs);
                    Step::Full
                }
                Some(step) => {
                    self.last = Some((inputs, engine));
                    step
                }
                None => {
                    self.full(inputs);
                    Step::Full
                }
            },
            None => {
                self.full(inputs);
                Step::Full
            }
        };
        let desired = self.last.as_ref().map(|(_, e)| e.desired());
        (step, desired.unwrap_or(&EMPTY))
    }

    /// Applies the differences from `old` to `new` to `engine`, or `None` (the engine
    /// untouched) when they need a full computation.
    fn apply(old: &Inputs, new: &Inputs, engine: &mut Engine) -> Option<Step> {
        let same_base = old.enforcement == new.enforcement
            && old.cidrs == new.cidrs
            && old.proxies == new.proxies;
        if !same_base {
            return None;
        }
        let identities = diff(&old.identities, &new.identities, |i| i.id);
        let endpoints = diff(&old.endpoints, &new.endpoints, |e| e.id);
        let policies = diff(&old.policies, &new.policies, |p| p.source.to_string());
        let named_ports_move = identities
            .removed
            .iter()
            .chain(&identities.added)
            .any(|i| !i.named_ports.is_empty());
        if named_ports_move && engine.resolves_egress_named_ports() {
            return None;
        }
        let changes = Changes {
            identities_removed: identities.removed.len(),
            identities_added: identities.added.len(),
            endpoints_removed: endpoints.removed.len(),
            endpoints_added: endpoints.added.len(),
            policies_removed: policies.removed.len(),
            policies_added: policies.added.len(),
        };
        if changes == Changes::default() {
            return Some(Step::Unchanged);
        }
        for policy in &policies.removed {
            engine.remove_policy(&policy.source.to_string());
        }
        for endpoint in &endpoints.removed {
            engine.remove_endpoint(endpoint.id);
        }
        for identity in &identities.removed {
            engine.remove_identity(identity.id);
        }
        for identity in &identities.added {
            engine.add_identity(identity);
        }
        for endpoint in &endpoints.added {
            engine.add_endpoint(endpoint);
        }
        for policy in &policies.added {
            engine.add_policy(policy);
        }
        Some(Step::Incremental(changes))
    }

    fn full(&mut self, inputs: Inputs) {
        let engine = Engine::with_proxies(
            &inputs.policies,
            inputs.enforcement,
            &inputs.endpoints,
            &inputs.identities,
            &inputs.cidrs,
            inputs.proxies,
        );
        self.last = Some((inputs, engine));
    }
}

static EMPTY: Desired = Desired {
    default_deny: std::collections::BTreeSet::new(),
    entries: BTreeMap::new(),
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Labels;
    use crate::parse::parse_file;

    fn policies(yaml: &str) -> Vec<Policy> {
        parse_file("t.yaml", yaml).policies
    }

    fn identity(id: u32, labels: &str) -> IdentityInput {
        IdentityInput {
            id,
            labels: Labels::parse_list(labels).expect("labels"),
            named_ports: Default::default(),
        }
    }

    const A: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a, namespace: prod}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  ingress: [{fromEndpoints: [{matchLabels: {role: client}}]}]\n";
    const B: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: b, namespace: prod}\nspec:\n  endpointSelector: {}\n  egress: [{toEntities: [cluster], toPorts: [{ports: [{port: \"53\"}]}]}]\n";

    fn inputs(p: &str, ids: &[IdentityInput]) -> Inputs {
        let web = "k8s:app=web,k8s:io.kubernetes.pod.namespace=prod";
        Inputs {
            policies: policies(p),
            enforcement: Enforcement::Default,
            endpoints: vec![EndpointInput {
                id: 1,
                labels: Labels::parse_list(web).expect("labels"),
                named_ports: BTreeMap::new(),
            }],
            identities: ids.to_vec(),
            cidrs: CidrIdentities::default(),
            proxies: ProxyPorts::default(),
        }
    }

    fn full(i: &Inputs) -> Desired {
        Engine::new(
            &i.policies,
            i.enforcement,
            &i.endpoints,
            &i.identities,
            &i.cidrs,
        )
        .into_desired()
    }

    #[test]
    fn additions_are_incremental_and_equal_a_full_computation() {
        let c1 = identity(300, "k8s:role=client,k8s:io.kubernetes.pod.namespace=prod");
        let c2 = identity(
            301,
            "k8s:role=client,k8s:io.kubernetes.pod.namespace=prod,k8s:v=2",
        );
        let mut inc = Incremental::default();
        assert_eq!(
            inc.update(inputs(A, std::slice::from_ref(&c1))).0,
            Step::Full
        );
        assert_eq!(
            inc.update(inputs(A, std::slice::from_ref(&c1))).0,
            Step::Unchanged
        );

        let next = inputs(&format!("{A}---\n{B}"), &[c1.clone(), c2.clone()]);
        let (step, got) = inc.update(next.clone());
        assert_eq!(
            step,
            Step::Incremental(Changes {
                identities_added: 1,
                policies_added: 1,
                ..Changes::default()
            })
        );
        assert_eq!(*got, full(&next));
        assert!(!got.entries.is_empty());

        // A removed identity and a removed policy are incremental too.
        let (step, got) = inc.update(inputs(A, std::slice::from_ref(&c2)));
        assert_eq!(
            step,
            Step::Incremental(Changes {
                identities_removed: 1,
                policies_removed: 1,
                ..Changes::default()
            })
        );
        assert_eq!(*got, full(&inputs(A, &[c2])));
    }
}
