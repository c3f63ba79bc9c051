//! Parsing errors name file, document and field; every problem is reported.

use super::*;
use crate::model::{Port, Protocol, Subject};

fn problems(text: &str) -> Vec<String> {
    parse_file("p.yaml", text)
        .problems
        .iter()
        .map(ToString::to_string)
        .collect()
}

const CNP_HEAD: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x, namespace: payments}\n";

#[test]
fn every_problem_names_file_document_and_field() {
    let text = format!(
        "{CNP_HEAD}spec:\n  endpointSelector: {{}}\n  ingress: [{{fromEndpoints: [{{}}]}}]\n---\n{CNP_HEAD}spec:\n  endpointSelector: {{}}\n  egress:\n  - toPorts:\n    - ports:\n      - port: \"abc!\"\n        protocol: TCPP\n    toEntitys: [world]\n  - toEntities: [mars]\n    toCIDR: [10.0.0.300/8]\n"
    );
    let got = problems(&text);
    let prefix = "p.yaml: document 2 (CiliumNetworkPolicy payments/x): spec.egress";
    assert_eq!(
        got,
        [
            format!("{prefix}[0].toEntitys: unknown field"),
            format!(
                "{prefix}[0].toPorts[0].ports[0].protocol: invalid protocol \"TCPP\" (expected TCP, UDP, SCTP, ICMP or ANY)"
            ),
            format!("{prefix}[0].toPorts[0].ports[0].port: invalid port \"abc!\""),
            format!(
                "{prefix}[1].toEntities[0]: unknown entity \"mars\" (expected all, world, cluster, host, remote-node, kube-apiserver, health, init, unmanaged or ingress)"
            ),
            format!("{prefix}[1].toCIDR[0]: invalid CIDR \"10.0.0.300/8\""),
        ]
    );
}

#[test]
fn seed_article_default_deny_is_rejected_with_the_fix() {
    let got = problems(&format!(
        "{CNP_HEAD}spec:\n  endpointSelector: {{}}\n  ingress: []\n  egress: []\n"
    ));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with(
            "p.yaml: document 1 (CiliumNetworkPolicy payments/x): spec: the rule has no ingress"
        ),
        "{}",
        got[0]
    );
    assert!(
        got[0].contains("cilium/cilium#35558") && got[0].contains("ingress: [{}]"),
        "{}",
        got[0]
    );
}

#[test]
fn specs_and_selectors_and_unsupported_fields() {
    let text = format!(
        "{CNP_HEAD}specs:\n- endpointSelector: {{matchLabels: {{app: a}}}}\n  ingress: [{{fromRequires: [{{}}]}}]\n- nodeSelector: {{}}\n  ingress: [{{}}]\n- ingress: [{{}}]\n"
    );
    let got = problems(&text);
    let p = "p.yaml: document 1 (CiliumNetworkPolicy payments/x)";
    assert_eq!(
        got,
        [
            format!("{p}: specs[0].ingress[0].fromRequires: is not supported by porin yet"),
            format!(
                "{p}: specs[1].nodeSelector: only a CiliumClusterwideNetworkPolicy may select nodes"
            ),
            format!("{p}: specs[2]: one of endpointSelector or nodeSelector is required"),
        ]
    );
}

#[test]
fn knp_fields_and_errors() {
    let ok = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: k, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {team: ops}}\n      podSelector: {matchLabels: {role: probe}}\n    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}\n    ports:\n    - {port: 8000, endPort: 8080}\n    - {port: metrics, protocol: UDP}\n";
    let parsed = parse_file("k.yaml", ok);
    assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
    let rule = &parsed.policies[0].rules[0];
    assert!(rule.default_deny.ingress && !rule.default_deny.egress);
    assert!(matches!(rule.subject, Subject::Endpoints(_)));
    let ports = &rule.ingress[0].to_ports[0].ports;
    assert_eq!(
        ports[0].port,
        Port::Range {
            start: 8000,
            end: 8080
        }
    );
    assert_eq!(ports[0].protocol, Protocol::Tcp);
    assert_eq!(ports[1].port, Port::Named("metrics".into()));

    let bad = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: k}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress, Sideways]\n  egress:\n  - to: [{ipBlock: {cidr: nope}, podSelector: {}}]\n";
    let got = problems(bad);
    let p = "p.yaml: document 1 (NetworkPolicy default/k)";
    assert_eq!(
        got,
        [
            format!(
                "{p}: spec.policyTypes[1]: invalid policy type \"Sideways\" (expected Ingress or Egress)"
            ),
            format!(
                "{p}: spec.egress[0].to[0]: ipBlock cannot be combined with podSelector or namespaceSelector"
            ),
        ]
    );
}

#[test]
fn other_kinds_and_yaml_errors() {
    let got = problems("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\nkind: [oops\n");
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].starts_with("p.yaml: document 1: not a network policy"),
        "{}",
        got[0]
    );
    assert!(
        got[1].starts_with("p.yaml: document 2: invalid YAML"),
        "{}",
        got[1]
    );
}

#[test]
fn examples_parse() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).expect("examples dir") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        let parsed = parse_file(&path.display().to_string(), &text);
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        count += parsed.policies.len();
    }
    assert_eq!(count, 4);
}
