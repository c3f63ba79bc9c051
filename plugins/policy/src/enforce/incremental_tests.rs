//! Incremental steps against the full computation: random sequences of new and removed
//! identities, endpoints and policies (edits, relabels and namespace label changes are
//! removals plus additions) must leave exactly the maps a full computation gives, without
//! falling back to one.

use std::collections::BTreeMap;

use super::desired::{Desired, EndpointInput, IdentityInput, desired, dp_direction, lookup};
use super::incremental::{Changes, Incremental, Inputs, Step};
use crate::Enforcement;
use crate::compute::CidrIdentities;
use crate::model::{Direction, Labels, Policy};
use crate::parse::parse_file;
use crate::proxy::ProxyPorts;

fn policy(name: &str, spec: &str) -> Policy {
    let yaml = format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {name}, namespace: prod}}\nspec:\n{spec}"
    );
    let mut parsed = parse_file("case.yaml", &yaml);
    assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
    assert_eq!(parsed.policies.len(), 1, "{yaml}");
    parsed.policies.remove(0)
}

/// The pool: each name with two versions (the second is the "edit"). `allow-web`,
/// `allow-web-l7` and `deny-web` write the same keys (deny > proxy > smaller id).
fn pool() -> Vec<(Policy, Policy)> {
    let web_from = |app: &str, port: u16, extra: &str| {
        format!(
            "  endpointSelector: {{matchLabels: {{app: web}}}}\n  ingress:\n  - fromEndpoints: [{{matchLabels: {{app: {app}}}}}]\n    toPorts: [{{ports: [{{port: \"{port}\", protocol: TCP}}]{extra}}}]\n"
        )
    };
    let l7 = ", rules: {http: [{method: GET}]}";
    let pair = |name: &str, a: String, b: String| (policy(name, &a), policy(name, &b));
    vec![
        pair("allow-web", web_from("client", 80, ""), web_from("client", 8080, "")),
        pair("allow-web-l7", web_from("client", 80, l7), web_from("api", 80, l7)),
        pair(
            "deny-web",
            "  endpointSelector: {matchLabels: {app: web}}\n  ingressDeny:\n  - fromEndpoints: [{matchLabels: {app: client}}]\n    toPorts: [{ports: [{port: \"80\", protocol: TCP}]}]\n".to_owned(),
            "  endpointSelector: {matchLabels: {app: web}}\n  ingressDeny:\n  - fromEndpoints: [{matchLabels: {app: api}}]\n".to_owned(),
        ),
        pair(
            "db-named-port",
            "  endpointSelector: {matchLabels: {app: db}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {app: api}}]\n    toPorts: [{ports: [{port: \"pg\", protocol: TCP}]}]\n".to_owned(),
            "  endpointSelector: {matchLabels: {app: db}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {app: web}}]\n    toPorts: [{ports: [{port: \"pg\", protocol: TCP}, {port: \"9187\"}]}]\n".to_owned(),
        ),
        pair(
            "dns",
            "  endpointSelector: {}\n  egress:\n  - toEntities: [cluster]\n    toPorts: [{ports: [{port: \"53\", protocol: UDP}]}]\n".to_owned(),
            "  endpointSelector: {}\n  egress:\n  - toEntities: [all]\n    toPorts: [{ports: [{port: \"53\"}]}]\n".to_owned(),
        ),
        pair(
            "team-a",
            "  endpointSelector: {matchLabels: {app: api}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {io.cilium.k8s.namespace.labels.team: a, k8s:io.kubernetes.pod.namespace: dev}}]\n".to_owned(),
            "  endpointSelector: {matchLabels: {app: api}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {io.cilium.k8s.namespace.labels.team: b}}]\n    toPorts: [{ports: [{port: \"443\", protocol: TCP}]}]\n".to_owned(),
        ),
        pair(
            "egress-deny-db",
            "  endpointSelector: {matchLabels: {app: client}}\n  egressDeny:\n  - toEndpoints: [{matchLabels: {app: db}}]\n".to_owned(),
            "  endpointSelector: {matchLabels: {app: client}}\n  egressDeny:\n  - toEndpoints: [{matchLabels: {app: db}}]\n    toPorts: [{ports: [{port: \"5432\", protocol: TCP}]}]\n".to_owned(),
        ),
    ]
}

const APPS: &[&str] = &["web", "db", "api", "client"];
const NAMESPACES: &[&str] = &["prod", "dev"];

fn labels(app: &str, ns: &str, team: &str) -> Labels {
    Labels::parse_list(&format!(
        "k8s:app={app},k8s:io.kubernetes.pod.namespace={ns},k8s:io.cilium.k8s.namespace.labels.team={team}"
    ))
    .expect("labels")
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// The cluster the random steps change.
struct World {
    teams: BTreeMap<&'static str, String>,
    next_id: u32,
    inputs: Inputs,
}

impl World {
    fn new(enforcement: Enforcement) -> Self {
        let mut world = Self {
            teams: NAMESPACES.iter().map(|ns| (*ns, "a".to_owned())).collect(),
            next_id: 1000,
            inputs: Inputs {
                policies: Vec::new(),
                enforcement,
                endpoints: Vec::new(),
                identities: Vec::new(),
                cidrs: CidrIdentities::default(),
                proxies: ProxyPorts::default(),
            },
        };
        for app in APPS {
            for ns in NAMESPACES {
                world.add_identity(app, ns);
            }
        }
        world
    }

    fn add_identity(&mut self, app: &str, ns: &'static str) -> u32 {
        self.next_id += 1;
        let team = self.teams[ns].clone();
        self.inputs.identities.push(IdentityInput {
            id: self.next_id,
            labels: labels(app, ns, &team),
            named_ports: Default::default(),
        });
        self.next_id
    }

    /// A local endpoint (ids below 1000) of a pod with `app` in `ns`; some declare `pg`.
    fn endpoint(&self, id: u32, app: &str, ns: &str) -> EndpointInput {
        let named_ports = match id % 3 {
            0 => [("pg".to_owned(), 5432)].into(),
            1 => [("pg".to_owned(), 5433)].into(),
            _ => BTreeMap::new(),
        };
        EndpointInput {
            id,
            labels: labels(app, ns, &self.teams[ns]),
            named_ports,
        }
    }

    /// A namespace's `team` label changes: its identities are replaced by new ones and
    /// its local endpoints relabelled.
    fn relabel_namespace(&mut self, ns: &'static str, team: &str) {
        self.teams.insert(ns, team.to_owned());
        let ns_label = format!("k8s:io.kubernetes.pod.namespace={ns}");
        let old: Vec<IdentityInput> = self.inputs.identities.clone();
        self.inputs.identities.clear();
        for identity in old {
            if identity.labels.to_string().contains(&ns_label) {
                let app = identity
                    .labels
                    .get("k8s", "app")
                    .unwrap_or_default()
                    .to_owned();
                self.add_identity(&app, ns);
            } else {
                self.inputs.identities.push(identity);
            }
        }
        for endpoint in &mut self.inputs.endpoints {
            if endpoint.labels.to_string().contains(&ns_label) {
                let app = endpoint
                    .labels
                    .get("k8s", "app")
                    .unwrap_or_default()
                    .to_owned();
                endpoint.labels = labels(&app, ns, team);
            }
        }
    }

    /// One random change.
    fn step(&mut self, rng: &mut Rng, pool: &[(Policy, Policy)]) {
        let inputs = &mut self.inputs;
        match rng.below(9) {
            0 => {
                let (app, ns) = (APPS[rng.below(APPS.len())], NAMESPACES[rng.below(2)]);
                self.add_identity(app, ns);
            }
            1 if !inputs.identities.is_empty() => {
                inputs.identities.remove(rng.below(inputs.identities.len()));
            }
            2 | 3 => {
                let id = 1 + rng.below(12) as u32;
                let (app, ns) = (APPS[rng.below(APPS.len())], NAMESPACES[rng.below(2)]);
                let endpoint = self.endpoint(id, app, ns);
                let endpoints = &mut self.inputs.endpoints;
                match endpoints.iter_mut().find(|e| e.id == id) {
                    // Relabelled (or a new pod reusing the id).
                    Some(existing) => *existing = endpoint,
                    None => endpoints.push(endpoint),
                }
            }
            4 if !inputs.endpoints.is_empty() => {
                inputs.endpoints.remove(rng.below(inputs.endpoints.len()));
            }
            5 | 6 => {
                let (first, second) = &pool[rng.below(pool.len())];
                let version = if rng.below(2) == 0 { first } else { second };
                match inputs
                    .policies
                    .iter_mut()
                    .find(|p| p.source == version.source)
                {
                    Some(existing) => *existing = version.clone(),
                    None => inputs.policies.push(version.clone()),
                }
            }
            7 if inputs.policies.len() > 2 => {
                inputs.policies.remove(rng.below(inputs.policies.len()));
            }
            8 => {
                let team = ["a", "b", "c"][rng.below(3)];
                self.relabel_namespace(NAMESPACES[rng.below(2)], team);
            }
            _ => {}
        }
    }
}

fn full(i: &Inputs) -> Desired {
    desired(
        &i.policies,
        i.enforcement,
        &i.endpoints,
        &i.identities,
        &i.cidrs,
    )
}

#[test]
fn random_changes_are_incremental_and_equal_a_full_computation() {
    let pool = pool();
    let mut total_nonempty = 0;
    for enforcement in [Enforcement::Default, Enforcement::Always] {
        for seed in 1..=12u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut world = World::new(enforcement);
            let mut inc = Incremental::default();
            assert_eq!(inc.update(world.inputs.clone()).0, Step::Full);
            let mut nonempty = 0;
            for n in 0..60 {
                world.step(&mut rng, &pool);
                let (step, got) = inc.update(world.inputs.clone());
                assert_ne!(step, Step::Full, "{enforcement:?} seed {seed} step {n}");
                assert!(
                    *got == full(&world.inputs),
                    "{enforcement:?} seed {seed} step {n} ({step:?}): incremental differs from full"
                );
                nonempty += usize::from(!got.entries.is_empty());
            }
            total_nonempty += nonempty;
        }
    }
    // 2 modes x 12 seeds x 60 steps (the first ones have no policy yet): about half
    // the states must program something.
    assert!(
        total_nonempty > 600,
        "only {total_nonempty} states had entries"
    );
}

fn web_client_world(enforcement: Enforcement) -> (World, Vec<(Policy, Policy)>) {
    let pool = pool();
    let mut world = World::new(enforcement);
    world.inputs.endpoints = vec![
        world.endpoint(1, "web", "prod"),
        world.endpoint(3, "db", "prod"),
        world.endpoint(4, "api", "prod"),
    ];
    (world, pool)
}

#[test]
fn a_new_endpoint_writes_only_its_keys_with_deny_and_named_ports() {
    let (mut world, pool) = web_client_world(Enforcement::Always);
    world.inputs.policies = pool.iter().map(|(p, _)| p.clone()).collect();
    let mut inc = Incremental::default();
    inc.update(world.inputs.clone());
    // A second web pod and a db pod declaring `pg` on 5433.
    world
        .inputs
        .endpoints
        .push(world.endpoint(7, "web", "prod"));
    world
        .inputs
        .endpoints
        .push(world.endpoint(10, "db", "prod"));
    let (step, got) = inc.update(world.inputs.clone());
    assert_eq!(
        step,
        Step::Incremental(Changes {
            endpoints_added: 2,
            ..Changes::default()
        })
    );
    assert_eq!(*got, full(&world.inputs));
    let ingress = dp_direction(Direction::Ingress);
    let client = 1001 + 2 * 3; // client in prod
    let api = 1001 + 2 * 2; // api in prod
    assert_eq!(
        lookup(got, 7, ingress, client, 6, 80),
        super::desired::MapVerdict::Dropped(super::desired::REASON_POLICY_DENY)
    );
    assert_eq!(
        lookup(got, 10, ingress, api, 6, 5433),
        super::desired::MapVerdict::Allowed
    );
    assert_eq!(
        lookup(got, 10, ingress, api, 6, 5432),
        super::desired::MapVerdict::Dropped(super::desired::REASON_POLICY_DENIED)
    );
}

#[test]
fn removing_one_writer_of_a_shared_key_keeps_the_others_value() {
    let (mut world, pool) = web_client_world(Enforcement::Default);
    let names = ["allow-web", "allow-web-l7", "deny-web"];
    world.inputs.policies = pool
        .iter()
        .filter(|(p, _)| names.contains(&p.source.name.as_str()))
        .map(|(p, _)| p.clone())
        .collect();
    let mut inc = Incremental::default();
    inc.update(world.inputs.clone());
    // Remove the deny, then the proxy allow: each time the next strongest writer shows.
    for name in ["deny-web", "allow-web-l7"] {
        world.inputs.policies.retain(|p| p.source.name != name);
        let (step, got) = inc.update(world.inputs.clone());
        assert_eq!(
            step,
            Step::Incremental(Changes {
                policies_removed: 1,
                ..Changes::default()
            })
        );
        assert_eq!(*got, full(&world.inputs), "after removing {name}");
        assert!(!got.entries.is_empty());
    }
}

#[test]
fn a_namespace_label_change_is_incremental() {
    let (mut world, pool) = web_client_world(Enforcement::Default);
    world.inputs.policies = pool.iter().map(|(p, _)| p.clone()).collect();
    world.inputs.endpoints.push(world.endpoint(5, "api", "dev"));
    let mut inc = Incremental::default();
    inc.update(world.inputs.clone());
    world.relabel_namespace("dev", "b");
    let (step, got) = inc.update(world.inputs.clone());
    assert_eq!(
        step,
        Step::Incremental(Changes {
            identities_removed: 4,
            identities_added: 4,
            endpoints_removed: 1,
            endpoints_added: 1,
            ..Changes::default()
        })
    );
    assert_eq!(*got, full(&world.inputs));
}

#[test]
fn many_policy_edits_end_in_a_clean_full_computation() {
    let (mut world, pool) = web_client_world(Enforcement::Default);
    let (first, second) = pool[0].clone();
    let mut inc = Incremental::default();
    let mut steps = Vec::new();
    for n in 0..300 {
        world.inputs.policies = vec![if n % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        }];
        let (step, got) = inc.update(world.inputs.clone());
        assert_eq!(*got, full(&world.inputs), "edit {n}");
        steps.push(step);
    }
    let full_steps = steps.iter().filter(|s| **s == Step::Full).count();
    // The first computation, then one clean start after 257 retired rules.
    assert_eq!(full_steps, 2, "{steps:?}");
}
