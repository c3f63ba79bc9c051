//! Semantics cases from Cilium's documentation, and traces over the seed
//! article's policies. Each case: policies, endpoint, peer, port, expected verdict.

use super::*;
use crate::Enforcement;
use crate::model::{Direction, Labels, Policy, Protocol};
use crate::parse::parse_file;

fn policies(yaml: &str) -> Vec<Policy> {
    let parsed = parse_file("case.yaml", yaml);
    assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
    parsed.policies
}

fn pod(labels: &str) -> Peer {
    Peer {
        labels: Labels::parse_list(labels).expect("labels"),
        cidr: None,
    }
}

fn world(cidr: &str) -> Peer {
    Peer {
        labels: Labels::parse_list("reserved:world").expect("labels"),
        cidr: Some(cidr.parse().expect("cidr")),
    }
}

fn tcp(port: u16) -> L4 {
    L4 {
        port: Some((port, Protocol::Tcp)),
        ..L4::default()
    }
}

fn ingress(p: &[Policy], dst: &str, src: &Peer, l4: &L4) -> Decision {
    decide(
        p,
        Enforcement::Default,
        &pod(dst).labels,
        Direction::Ingress,
        src,
        l4,
    )
}

fn egress(p: &[Policy], src: &str, dst: &Peer, l4: &L4) -> Decision {
    decide(
        p,
        Enforcement::Default,
        &pod(src).labels,
        Direction::Egress,
        dst,
        l4,
    )
}

const CNP: &str =
    "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: prod}\n";
const WEB: &str = "k8s:app=web,k8s:io.kubernetes.pod.namespace=prod";
const FRONT: &str = "k8s:app=front,k8s:io.kubernetes.pod.namespace=prod";
const OTHER_NS_FRONT: &str = "k8s:app=front,k8s:io.kubernetes.pod.namespace=dev";

/// docs.cilium.io policy/intro "Policy Enforcement Modes": default deny per
/// direction only when a rule selecting the endpoint has a section for it.
#[test]
fn default_deny_is_per_direction() {
    let p = policies(&format!(
        "{CNP}spec:\n  endpointSelector: {{matchLabels: {{app: web}}}}\n  ingress: [{{fromEndpoints: [{{matchLabels: {{app: front}}}}]}}]\n"
    ));
    let d = ingress(
        &p,
        WEB,
        &pod("k8s:app=db,k8s:io.kubernetes.pod.namespace=prod"),
        &tcp(80),
    );
    assert_eq!(d.verdict, Verdict::Denied);
    assert!(
        d.reason.starts_with("default deny at ingress"),
        "{}",
        d.reason
    );
    // No egress section: egress stays open.
    let d = egress(&p, WEB, &world("1.1.1.1/32"), &tcp(443));
    assert_eq!((d.verdict, d.enforced), (Verdict::Allowed, false));
    // A pod no rule selects is not enforced at all.
    let d = ingress(&p, FRONT, &pod(WEB), &tcp(80));
    assert_eq!((d.verdict, d.enforced), (Verdict::Allowed, false));
}

/// language.rst "Ingress/Egress Default Deny": `ingress: [{}]` allows nothing
/// but switches on default deny; `fromEndpoints: [{}]` is every pod of the namespace.
#[test]
fn empty_rule_versus_empty_selector() {
    let deny_all = policies(&format!(
        "{CNP}spec:\n  endpointSelector: {{}}\n  ingress: [{{}}]\n"
    ));
    assert_eq!(
        ingress(&deny_all, WEB, &pod(FRONT), &tcp(80)).verdict,
        Verdict::Denied
    );
    let same_ns = policies(&format!(
        "{CNP}spec:\n  endpointSelector: {{}}\n  ingress: [{{fromEndpoints: [{{}}]}}]\n"
    ));
    assert_eq!(
        ingress(&same_ns, WEB, &pod(FRONT), &tcp(80)).verdict,
        Verdict::Allowed
    );
    assert_eq!(
        ingress(&same_ns, WEB, &pod(OTHER_NS_FRONT), &tcp(80)).verdict,
        Verdict::Denied
    );
    assert_eq!(
        ingress(&same_ns, WEB, &world("8.8.8.8/32"), &tcp(80)).verdict,
        Verdict::Denied
    );
    // enableDefaultDeny: false keeps the allow but does not close the direction.
    let no_dd = policies(&format!(
        "{CNP}spec:\n  endpointSelector: {{}}\n  enableDefaultDeny: {{ingress: false}}\n  ingress: [{{fromEndpoints: [{{matchLabels: {{app: x}}}}]}}]\n"
    ));
    let d = ingress(&no_dd, WEB, &pod(FRONT), &tcp(80));
    assert_eq!((d.verdict, d.enforced), (Verdict::Allowed, false));
}

/// language.rst "Deny Policies": deny takes precedence over allow, from any policy.
#[test]
fn deny_wins_over_allow_from_any_kind() {
    let p = policies(&format!(
        "{CNP}spec:\n  endpointSelector: {{}}\n  ingressDeny: [{{fromEndpoints: [{{matchLabels: {{app: front}}}}], toPorts: [{{ports: [{{port: \"22\"}}]}}]}}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: all, namespace: prod}}\nspec:\n  podSelector: {{}}\n  ingress: [{{}}]\n"
    ));
    let d = ingress(&p, WEB, &pod(FRONT), &tcp(22));
    assert_eq!(d.verdict, Verdict::Denied);
    assert_eq!(d.matched[0].action, "deny");
    assert_eq!(
        ingress(&p, WEB, &pod(FRONT), &tcp(80)).verdict,
        Verdict::Allowed
    );
}

/// CNP selectors are scoped to the policy's namespace unless they name one (PR #14580);
/// CCNP selectors are cluster-wide.
#[test]
fn namespace_scoping() {
    let p = policies(&format!(
        "{CNP}spec:\n  endpointSelector: {{}}\n  ingress:\n  - fromEndpoints: [{{matchLabels: {{app: front}}}}]\n  - fromEndpoints: [{{matchLabels: {{k8s:io.kubernetes.pod.namespace: ops}}}}]\n"
    ));
    assert_eq!(
        ingress(&p, WEB, &pod(FRONT), &tcp(80)).verdict,
        Verdict::Allowed
    );
    assert_eq!(
        ingress(&p, WEB, &pod(OTHER_NS_FRONT), &tcp(80)).verdict,
        Verdict::Denied
    );
    assert_eq!(
        ingress(
            &p,
            WEB,
            &pod("k8s:app=x,k8s:io.kubernetes.pod.namespace=ops"),
            &tcp(80)
        )
        .verdict,
        Verdict::Allowed
    );
    // The CNP does not select pods of another namespace at all.
    assert!(
        !ingress(
            &p,
            "k8s:app=web,k8s:io.kubernetes.pod.namespace=dev",
            &pod(FRONT),
            &tcp(80)
        )
        .enforced
    );
    let ccnp = policies(
        "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: c}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  ingress: [{fromEndpoints: [{matchLabels: {app: front}}]}]\n",
    );
    assert_eq!(
        ingress(
            &ccnp,
            "k8s:app=web,k8s:io.kubernetes.pod.namespace=dev",
            &pod(FRONT),
            &tcp(80)
        )
        .verdict,
        Verdict::Allowed
    );
}

/// language.rst "Entities Based" and "CIDR based" with except.
#[test]
fn entities_and_cidrs() {
    let p = policies(&format!(
        "{CNP}spec:\n  endpointSelector: {{}}\n  egress:\n  - toEntities: [kube-apiserver, cluster]\n  - toCIDRSet: [{{cidr: 10.0.0.0/8, except: [10.96.0.0/12]}}]\n"
    ));
    let api = pod("reserved:kube-apiserver");
    assert_eq!(egress(&p, WEB, &api, &tcp(443)).verdict, Verdict::Allowed);
    assert_eq!(
        egress(&p, WEB, &pod(OTHER_NS_FRONT), &tcp(80)).verdict,
        Verdict::Allowed
    );
    assert_eq!(
        egress(&p, WEB, &world("10.1.2.3/32"), &tcp(80)).verdict,
        Verdict::Allowed
    );
    assert_eq!(
        egress(&p, WEB, &world("10.100.0.1/32"), &tcp(80)).verdict,
        Verdict::Denied
    );
    assert_eq!(
        egress(&p, WEB, &world("192.0.2.1/32"), &tcp(80)).verdict,
        Verdict::Denied
    );
}

/// language.rst "Layer 4 Examples": port ranges with endPort, protocols, named ports.
#[test]
fn port_ranges_protocols_and_named_ports() {
    let p = policies(&format!(
        "{CNP}spec:\n  endpointSelector: {{}}\n  ingress:\n  - toPorts: [{{ports: [{{port: \"8000\", endPort: 8100, protocol: TCP}}, {{port: \"53\", protocol: ANY}}, {{port: http}}]}}]\n"
    ));
    let src = pod(FRONT);
    assert_eq!(ingress(&p, WEB, &src, &tcp(8050)).verdict, Verdict::Allowed);
    assert_eq!(ingress(&p, WEB, &src, &tcp(8101)).verdict, Verdict::Denied);
    let udp53 = L4 {
        port: Some((53, Protocol::Udp)),
        ..L4::default()
    };
    assert_eq!(ingress(&p, WEB, &src, &udp53).verdict, Verdict::Allowed);
    let udp8050 = L4 {
        port: Some((8050, Protocol::Udp)),
        ..L4::default()
    };
    assert_eq!(ingress(&p, WEB, &src, &udp8050).verdict, Verdict::Denied);
    // L4-only rule: any peer, even outside the cluster.
    assert_eq!(
        ingress(&p, WEB, &world("192.0.2.1/32"), &tcp(8000)).verdict,
        Verdict::Allowed
    );
    // A named port matches only once resolved against the destination's ports.
    assert_eq!(ingress(&p, WEB, &src, &tcp(9090)).verdict, Verdict::Denied);
    let named = L4 {
        port: Some((9090, Protocol::Tcp)),
        named_ports: [("http".to_owned(), 9090)].into(),
        ..L4::default()
    };
    assert_eq!(ingress(&p, WEB, &src, &named).verdict, Verdict::Allowed);
}

/// docs "Kubernetes NetworkPolicy ... both kinds are enforced": allows are a union.
#[test]
fn knp_and_cnp_are_a_union() {
    let p = policies(&format!(
        "{CNP}spec:\n  endpointSelector: {{matchLabels: {{app: web}}}}\n  ingress: [{{fromEndpoints: [{{matchLabels: {{app: front}}}}]}}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: k, namespace: prod}}\nspec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  ingress:\n  - from: [{{namespaceSelector: {{matchLabels: {{team: ops}}}}}}, {{ipBlock: {{cidr: 192.0.2.0/24}}}}]\n    ports: [{{port: 9090}}]\n"
    ));
    assert_eq!(
        ingress(&p, WEB, &pod(FRONT), &tcp(80)).verdict,
        Verdict::Allowed
    );
    let ops = pod(
        "k8s:app=x,k8s:io.kubernetes.pod.namespace=o,k8s:io.cilium.k8s.namespace.labels.team=ops",
    );
    assert_eq!(ingress(&p, WEB, &ops, &tcp(9090)).verdict, Verdict::Allowed);
    assert_eq!(ingress(&p, WEB, &ops, &tcp(80)).verdict, Verdict::Denied);
    assert_eq!(
        ingress(&p, WEB, &world("192.0.2.9/32"), &tcp(9090)).verdict,
        Verdict::Allowed
    );
    // KNP policyTypes [Egress] with no rules: default deny egress.
    let k = policies(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: e, namespace: prod}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n",
    );
    assert_eq!(
        egress(&k, WEB, &pod(FRONT), &tcp(80)).verdict,
        Verdict::Denied
    );
    assert_eq!(
        ingress(&k, WEB, &pod(FRONT), &tcp(80)).verdict,
        Verdict::Allowed
    );
}

/// Enforcement modes (policy/intro "Policy Enforcement Modes").
#[test]
fn enforcement_modes() {
    let none: Vec<Policy> = vec![];
    let src = pod(FRONT);
    let always = decide(
        &none,
        Enforcement::Always,
        &pod(WEB).labels,
        Direction::Ingress,
        &src,
        &tcp(80),
    );
    assert_eq!(always.verdict, Verdict::Denied);
    let p = policies(&format!(
        "{CNP}spec:\n  endpointSelector: {{}}\n  ingress: [{{}}]\n"
    ));
    let never = decide(
        &p,
        Enforcement::Never,
        &pod(WEB).labels,
        Direction::Ingress,
        &src,
        &tcp(80),
    );
    assert_eq!(never.verdict, Verdict::Allowed);
}

fn seed(files: &[&str]) -> Vec<Policy> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies");
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(format!("{dir}/{f}.yaml")).expect("example");
            policies(&text)
        })
        .collect()
}

const API: &str = "k8s:app=payments-api,k8s:io.kubernetes.pod.namespace=payments";
const ADMIN: &str = "k8s:app=payments-admin-api,k8s:io.kubernetes.pod.namespace=payments";

#[test]
fn seed_article_traces() {
    let all = seed(&[
        "default-deny",
        "payments-egress",
        "admin-api-access",
        "require-mtls",
    ]);
    let monitoring = pod("k8s:app=prometheus,k8s:io.kubernetes.pod.namespace=monitoring");
    let t = trace(
        &all,
        Enforcement::Default,
        &monitoring,
        &pod(ADMIN),
        &tcp(8080),
    );
    assert_eq!(t.verdict, Verdict::Allowed);
    let m = t
        .ingress
        .matched
        .iter()
        .find(|m| m.policy.name == "admin-api-access")
        .expect("matched");
    assert_eq!(m.rule, "spec.ingress[0]");
    assert!(m.l7.as_deref().is_some_and(|l| l.contains("HTTP")), "{m:?}");

    let postgres = pod("k8s:app=postgres,k8s:io.kubernetes.pod.namespace=payments");
    let t = trace(&all, Enforcement::Default, &pod(API), &postgres, &tcp(5432));
    assert_eq!(t.verdict, Verdict::Allowed);
    assert_eq!(t.egress.matched[0].rule, "spec.egress[2]");
    assert_eq!(t.egress.matched[0].policy.name, "payments-egress");

    let t = trace(
        &all,
        Enforcement::Default,
        &pod(API),
        &world("203.0.113.7/32"),
        &tcp(443),
    );
    assert_eq!(t.verdict, Verdict::Denied);
    assert!(
        t.egress
            .notes
            .iter()
            .any(|n| n.contains("needs FQDN policy")),
        "{:?}",
        t.egress.notes
    );

    // --dst-fqdn: a name a toFQDNs selector matches is allowed on 443, another is not.
    let (bucket, resolved) = super::resolve_fqdn(&all, "Bucket.S3.us-east-1.amazonaws.com.");
    assert!(resolved.selector.is_some(), "{resolved:?}");
    let t = trace(&all, Enforcement::Default, &pod(API), &bucket, &tcp(443));
    assert_eq!(t.verdict, Verdict::Allowed, "{t:?}");
    assert_eq!(t.egress.matched[0].rule, "spec.egress[1]");
    let (apex, resolved) = super::resolve_fqdn(&all, "s3.us-east-1.amazonaws.com");
    assert_eq!(
        resolved.selector, None,
        "the wildcard does not match the apex"
    );
    let t = trace(&all, Enforcement::Default, &pod(API), &apex, &tcp(443));
    assert_eq!(t.verdict, Verdict::Denied);

    let kube_dns = pod("k8s:k8s-app=kube-dns,k8s:io.kubernetes.pod.namespace=kube-system");
    let udp53 = L4 {
        port: Some((53, Protocol::Udp)),
        ..L4::default()
    };
    let t = trace(&all, Enforcement::Default, &pod(API), &kube_dns, &udp53);
    assert_eq!(t.verdict, Verdict::Allowed);
    assert!(
        t.egress.matched[0]
            .l7
            .as_deref()
            .is_some_and(|l| l.contains("DNS"))
    );

    // require-mtls admits every cluster identity on every port, so with it in
    // force an unknown namespace reaches the admin API: allows are a union.
    let stranger = pod("k8s:app=x,k8s:io.kubernetes.pod.namespace=unknown");
    let t = trace(
        &all,
        Enforcement::Default,
        &stranger,
        &pod(ADMIN),
        &tcp(8080),
    );
    assert_eq!(t.verdict, Verdict::Allowed);
    assert_eq!(t.ingress.matched[0].policy.name, "require-mtls");
    // Without it, only monitoring and ops get in.
    let strict = seed(&["default-deny", "admin-api-access"]);
    let t = trace(
        &strict,
        Enforcement::Default,
        &stranger,
        &pod(ADMIN),
        &tcp(8080),
    );
    assert_eq!(t.verdict, Verdict::Denied);
    assert!(t.ingress.reason.starts_with("default deny at ingress"));
    // The world never passes require-mtls.
    let t = trace(
        &all,
        Enforcement::Default,
        &world("198.51.100.1/32"),
        &pod(ADMIN),
        &tcp(8080),
    );
    assert_eq!(t.verdict, Verdict::Denied);
}
