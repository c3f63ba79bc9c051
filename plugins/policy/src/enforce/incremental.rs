//! Chooses between the incremental steps of [`Engine`] and a full computation: when the
//! only differences from the last inputs are new identities and new policies, they are
//! applied one by one; any removal or change (a policy edited or deleted, an identity
//! gone, a local endpoint added, removed or relabelled, other CIDR prefixes, another
//! enforcement mode) recomputes everything. Either way the result equals a full
//! computation from the same inputs (tested below and in `bench`).

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
    /// New identities and new policies applied incrementally.
    Added {
        identities: usize,
        policies: usize,
    },
}

/// The engine and the inputs it reflects.
#[derive(Default)]
pub struct Incremental {
    last: Option<(Inputs, Engine)>,
}

/// What `new` adds to `old` if it only adds (by key), or `None` if it removes or changes.
fn additions<'a, T: PartialEq, K: Ord>(
    old: &[T],
    new: &'a [T],
    key: impl Fn(&T) -> K,
) -> Option<Vec<&'a T>> {
    let old: BTreeMap<K, &T> = old.iter().map(|t| (key(t), t)).collect();
    let mut seen = 0;
    let mut added = Vec::new();
    for item in new {
        match old.get(&key(item)) {
            Some(previous) if *previous == item => seen += 1,
            Some(_) => return None,
            None => added.push(item),
        }
    }
    (seen == old.len()).then_some(added)
}

impl Incremental {
    /// Brings the maps to `inputs`, incrementally where possible.
    pub fn update(&mut self, inputs: Inputs) -> (Step, &Desired) {
        let step = match self.last.take() {
            Some((old, mut engine)) => {
                let same_base = old.enforcement == inputs.enforcement
                    && old.endpoints == inputs.endpoints
                    && old.cidrs == inputs.cidrs
                    && old.proxies == inputs.proxies;
                let identities = additions(&old.identities, &inputs.identities, |i| i.id);
                let policies = additions(&old.policies, &inputs.policies, |p| p.source.to_string());
                match (same_base, identities, policies) {
                    (true, Some(ids), Some(pols)) if ids.is_empty() && pols.is_empty() => {
                        self.last = Some((inputs, engine));
                        Step::Unchanged
                    }
                    (true, Some(ids), Some(pols))
                        if !(engine.resolves_egress_named_ports()
                            && ids.iter().any(|i| !i.named_ports.is_empty())) =>
                    {
                        for identity in &ids {
                            engine.add_identity(identity);
                        }
                        for policy in &pols {
                            engine.add_policy(policy);
                        }
                        let step = Step::Added {
                            identities: ids.len(),
                            policies: pols.len(),
                        };
                        self.last = Some((inputs, engine));
                        step
                    }
                    _ => {
                        self.full(inputs);
                        Step::Full
                    }
                }
            }
            None => {
                self.full(inputs);
                Step::Full
            }
        };
        let desired = self.last.as_ref().map(|(_, e)| e.desired());
        (step, desired.unwrap_or(&EMPTY))
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
            Step::Added {
                identities: 1,
                policies: 1
            }
        );
        assert_eq!(*got, full(&next));
        assert!(!got.entries.is_empty());

        // A removed identity and an edited policy recompute.
        let (step, got) = inc.update(inputs(A, std::slice::from_ref(&c2)));
        assert_eq!(step, Step::Full);
        assert_eq!(*got, full(&inputs(A, &[c2])));
    }
}
