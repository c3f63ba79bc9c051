//! The computation half of `scripts/bench policy`: a synthetic cluster (identities spread
//! over namespaces, local endpoints, rules mixing label selectors, namespaces, entities,
//! CIDRs with exceptions, deny rules and port ranges), the full computation, and the
//! incremental steps for one new identity, one new rule, one new local endpoint and one
//! removed rule, all checked against a full recomputation. Deterministic: the same sizes give the same cluster.

use std::fmt::Write as _;
use std::time::Instant;

use serde::Serialize;

use crate::Enforcement;
use crate::compute::{CidrIdentities, referenced_prefixes};
use crate::enforce::desired::{EndpointInput, IdentityInput};
use crate::enforce::engine::Engine;
use crate::model::{Label, Labels, NAMESPACE_LABELS, POD_NAMESPACE, Policy};
use crate::parse::parse_file;

/// Sizes of the synthetic cluster.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub identities: usize,
    pub rules: usize,
    pub endpoints: usize,
    pub namespaces: usize,
}

/// What the benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct ComputeReport {
    pub identities: usize,
    pub rules: usize,
    pub local_endpoints: usize,
    pub cidr_identities: usize,
    pub parse_ms: f64,
    pub full_compute_ms: f64,
    pub incremental_identity_ms: f64,
    pub incremental_rule_ms: f64,
    /// A new local endpoint (a pod scheduled on this node).
    pub incremental_endpoint_ms: f64,
    /// One rule removed (its endpoints recomputed from the remaining rules).
    pub incremental_remove_rule_ms: f64,
    /// One `fromEntities: [cluster]` rule removed: its endpoint has the most keys.
    pub incremental_remove_busy_rule_ms: f64,
    pub entries_total: usize,
    pub entries_per_endpoint: f64,
    pub entries_per_endpoint_max: usize,
    /// Resident memory of the process after the full computation, and its growth.
    pub rss_mb: f64,
    pub compute_rss_delta_mb: f64,
    /// The incremental results equal a full recomputation with the same inputs.
    pub incremental_matches_full: bool,
}

const TIERS: [&str; 4] = ["web", "api", "db", "cache"];
const APPS: usize = 500;

fn ns_name(i: usize) -> String {
    format!("ns-{i}")
}

/// The labels of synthetic pod identity `k`: unique per `k`.
fn identity_labels(k: usize, sizes: &Sizes) -> Labels {
    let ns = namespace_of(k, sizes);
    let mut labels = Labels::default();
    labels.insert(Label::new("k8s", "app", &format!("app-{}", k % APPS)));
    labels.insert(Label::new("k8s", "tier", TIERS[k % TIERS.len()]));
    labels.insert(Label::new("k8s", "version", &format!("v{}", k % 3)));
    labels.insert(Label::new("k8s", POD_NAMESPACE, &ns_name(ns)));
    labels.insert(Label::new(
        "k8s",
        &format!("{NAMESPACE_LABELS}team"),
        &format!("team-{}", ns % 10),
    ));
    labels
}

/// The synthetic identity (index) of local endpoint `j`.
fn endpoint_identity(j: usize, sizes: &Sizes) -> usize {
    let step = (sizes.identities / sizes.endpoints.max(1)).max(1);
    (j * step) % sizes.identities.max(1)
}

/// The namespace of synthetic identity `k`.
fn namespace_of(k: usize, sizes: &Sizes) -> usize {
    (k * sizes.namespaces) / sizes.identities.max(1)
}

/// Rule `i` as a policy document (one rule per policy object). Its subject is local
/// endpoint `i mod endpoints` (by app label, in that endpoint's namespace), as rules are
/// written for the workloads that run; its peers are chosen across the cluster.
fn rule_yaml(i: usize, sizes: &Sizes) -> String {
    let subject = endpoint_identity(i % sizes.endpoints.max(1), sizes);
    let ns = ns_name(namespace_of(subject, sizes));
    let other = ns_name((i * 7 + 3) % sizes.namespaces);
    let app = format!("app-{}", subject % APPS);
    let peer = format!("app-{}", (i * 31 + 5) % APPS);
    let tier = TIERS[i % TIERS.len()];
    let port = 1000 + (i % 50) * 10;
    let cnp = |body: &str| {
        format!(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: r{i}, namespace: {ns}}}\nspec:\n  endpointSelector: {{matchLabels: {{app: {app}}}}}\n{body}"
        )
    };
    match i % 20 {
        // Label selectors in the policy's namespace, one port.
        0..=7 => cnp(&format!(
            "  ingress:\n    - fromEndpoints: [{{matchLabels: {{app: {peer}}}}}]\n      toPorts: [{{ports: [{{port: \"{port}\", protocol: TCP}}]}}]\n"
        )),
        // Another namespace and a tier, a port range.
        8..=10 => cnp(&format!(
            "  ingress:\n    - fromEndpoints: [{{matchLabels: {{k8s:io.kubernetes.pod.namespace: {other}, tier: {tier}}}}}]\n      toPorts: [{{ports: [{{port: \"8000\", endPort: 8007, protocol: TCP}}]}}]\n"
        )),
        // Entities.
        11..=12 => cnp(
            "  egress:\n    - toEntities: [world, kube-apiserver]\n      toPorts: [{ports: [{port: \"443\", protocol: TCP}]}]\n  ingress:\n    - fromEntities: [cluster]\n      toPorts: [{ports: [{port: \"9100\", protocol: TCP}]}]\n",
        ),
        // CIDRs with an exception.
        13..=15 => cnp(&format!(
            "  egress:\n    - toCIDRSet: [{{cidr: 10.{a}.0.0/16, except: [10.{a}.{b}.0/24]}}]\n      toPorts: [{{ports: [{{port: \"5432\", protocol: TCP}}]}}]\n",
            a = i % 200,
            b = i % 250
        )),
        // Deny rules.
        16 => cnp(&format!(
            "  ingress:\n    - fromEndpoints: [{{}}]\n  ingressDeny:\n    - fromEndpoints: [{{matchLabels: {{version: v{v}}}}}]\n      toPorts: [{{ports: [{{port: \"22\", protocol: TCP}}]}}]\n",
            v = i % 3
        )),
        // Cluster-wide, by namespace labels.
        17..=18 => format!(
            "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {{name: r{i}}}\nspec:\n  endpointSelector: {{matchLabels: {{app: {app}}}}}\n  ingress:\n    - fromEndpoints: [{{matchLabels: {{io.cilium.k8s.namespace.labels.team: team-{t}, tier: {tier}}}}}]\n      toPorts: [{{ports: [{{port: \"{port}\", endPort: {end}, protocol: TCP}}]}}]\n",
            t = i % 10,
            end = port + 3
        ),
        // NetworkPolicy with a namespaceSelector and a pod selector.
        _ => format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: r{i}, namespace: {ns}}}\nspec:\n  podSelector: {{matchLabels: {{app: {app}}}}}\n  ingress:\n    - from: [{{namespaceSelector: {{matchLabels: {{team: team-{t}}}}}, podSelector: {{matchLabels: {{tier: {tier}}}}}}}]\n      ports: [{{port: {port}, protocol: TCP}}]\n",
            t = i % 10
        ),
    }
}

/// `rules` policy documents, as one multi-document YAML text.
pub fn rules_yaml(rules: usize, sizes: &Sizes) -> String {
    let mut out = String::new();
    for i in 0..rules {
        let _ = write!(out, "---\n{}", rule_yaml(i, sizes));
    }
    out
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Problems found while generating (a rule that does not parse is a bug here).
#[derive(Debug, thiserror::Error)]
#[error("generated rules do not parse: {0}")]
pub struct GenerateError(pub String);

fn parse(yaml: &str) -> Result<Vec<Policy>, GenerateError> {
    let parsed = parse_file("bench-rules.yaml", yaml);
    match parsed.problems.first() {
        Some(p) => Err(GenerateError(p.to_string())),
        None => Ok(parsed.policies),
    }
}

/// Runs the computation benchmark.
pub fn run(sizes: Sizes) -> Result<ComputeReport, GenerateError> {
    let identities: Vec<IdentityInput> = (0..sizes.identities)
        .map(|k| IdentityInput {
            id: 256 + u32::try_from(k).unwrap_or(u32::MAX - 256),
            labels: identity_labels(k, &sizes),
            named_ports: Default::default(),
        })
        .collect();
    let endpoints: Vec<EndpointInput> = (0..sizes.endpoints.min(sizes.identities))
        .zip(1u32..)
        .map(|(j, id)| EndpointInput {
            id,
            labels: identity_labels(endpoint_identity(j, &sizes), &sizes),
            named_ports: Default::default(),
        })
        .collect();
    let text = rules_yaml(sizes.rules, &sizes);
    let started = Instant::now();
    let policies = parse(&text)?;
    let parse_ms = ms(started);

    let rss_before = rss_mb();
    let started = Instant::now();
    let cidrs = CidrIdentities::for_prefixes(&referenced_prefixes(&policies));
    let mut engine = Engine::new(
        &policies,
        Enforcement::Default,
        &endpoints,
        &identities,
        &cidrs,
    );
    let full_compute_ms = ms(started);
    let rss_after = rss_mb();
    let per_endpoint: Vec<usize> = endpoints.iter().map(|e| engine.entries_of(e.id)).collect();
    let entries_total = engine.desired().entries.len();

    // One new identity: a pod of an app many rules name, in a busy namespace.
    let mut labels = identity_labels(sizes.identities + 13, &sizes);
    labels.insert(Label::new("k8s", "new", "yes"));
    let new_identity = IdentityInput {
        id: 256 + u32::try_from(sizes.identities).unwrap_or(0) + 1,
        labels,
        named_ports: Default::default(),
    };
    let started = Instant::now();
    engine.add_identity(&new_identity);
    let incremental_identity_ms = ms(started);

    // One new rule, of the kind that selects the most (label selector in a namespace).
    let new_rule = parse(
        &rule_yaml(sizes.rules + 20, &sizes)
            .replace(&format!("name: r{}", sizes.rules + 20), "name: new-rule"),
    )?;
    let started = Instant::now();
    for p in &new_rule {
        engine.add_policy(p);
    }
    let incremental_rule_ms = ms(started);

    // One new local endpoint, with the labels of the first endpoint (the subject of every
    // `endpoints`-th rule).
    let new_endpoint = EndpointInput {
        id: u32::try_from(endpoints.len()).unwrap_or(u32::MAX - 1) + 1,
        labels: identity_labels(endpoint_identity(0, &sizes), &sizes),
        named_ports: Default::default(),
    };
    let local_endpoints = endpoints.len();
    let started = Instant::now();
    engine.add_endpoint(&new_endpoint);
    let incremental_endpoint_ms = ms(started);
    let mut endpoints = endpoints;
    endpoints.push(new_endpoint);

    let mut all_identities = identities;
    all_identities.push(new_identity);
    let mut all_policies = policies;
    all_policies.extend(new_rule);

    // One rule removed: `r20`, a label selector like the new rule (or the first one in a
    // smaller cluster).
    let removed = all_policies
        .get(20)
        .or(all_policies.first())
        .map(|p| p.source.to_string())
        .unwrap_or_default();
    let started = Instant::now();
    engine.remove_policy(&removed);
    let incremental_remove_rule_ms = ms(started);
    all_policies.retain(|p| p.source.to_string() != removed);

    // One entities rule removed: `r31` (every rule of its endpoint selects the whole
    // cluster), or the last one in a smaller cluster.
    let busy = all_policies
        .iter()
        .find(|p| p.source.name == "r31")
        .or(all_policies.last())
        .map(|p| p.source.to_string())
        .unwrap_or_default();
    let started = Instant::now();
    engine.remove_policy(&busy);
    let incremental_remove_busy_rule_ms = ms(started);
    all_policies.retain(|p| p.source.to_string() != busy);
    let full = Engine::new(
        &all_policies,
        Enforcement::Default,
        &endpoints,
        &all_identities,
        &cidrs,
    );
    let incremental_matches_full = full.desired() == engine.desired();

    Ok(ComputeReport {
        identities: sizes.identities,
        rules: sizes.rules,
        local_endpoints,
        cidr_identities: cidrs.len(),
        parse_ms,
        full_compute_ms,
        incremental_identity_ms,
        incremental_rule_ms,
        incremental_endpoint_ms,
        incremental_remove_rule_ms,
        incremental_remove_busy_rule_ms,
        entries_total,
        entries_per_endpoint: per_endpoint.iter().sum::<usize>() as f64
            / per_endpoint.len().max(1) as f64,
        entries_per_endpoint_max: per_endpoint.iter().copied().max().unwrap_or(0),
        rss_mb: rss_after,
        compute_rss_delta_mb: (rss_after - rss_before).max(0.0),
        incremental_matches_full,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_run_is_consistent() {
        let report = run(Sizes {
            identities: 400,
            rules: 60,
            endpoints: 20,
            namespaces: 5,
        })
        .expect("generated rules parse");
        assert!(report.incremental_matches_full, "{report:?}");
        assert!(report.entries_total > 0, "{report:?}");
        assert!(report.cidr_identities > 0, "{report:?}");
    }
}
