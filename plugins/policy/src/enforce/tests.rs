//! The map contents agree with `compute::decide`, deny wins, ranges expand, broken
//! policies keep their last good version, and the programmer writes only differences.

use std::collections::BTreeMap;

use porin_core::datapath::DatapathError;
use porin_core::datapath::abi::{PolicyEpKey, PolicyKey, PolicyValue};
use serde_json::json;

use super::desired::{
    EndpointInput, IdentityInput, MapVerdict, REASON_POLICY_DENIED, REASON_POLICY_DENY,
    datapath_problems, desired, dp_direction, lookup, proxy_port_of,
};
use super::loader::Loader;
use super::programmer::{PolicyWriter, Programmer};
use crate::Enforcement;
use crate::compute::{CidrIdentities, L4, Peer, Verdict, decide};
use crate::model::{Direction, Labels, Policy, Protocol};
use crate::parse::parse_file;

fn policies(yaml: &str) -> Vec<Policy> {
    let parsed = parse_file("case.yaml", yaml);
    assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
    parsed.policies
}

fn labels(s: &str) -> Labels {
    Labels::parse_list(s).expect("labels")
}

/// (id, labels): pods of three namespaces, and reserved identities.
const IDENTITIES: &[(u32, &str)] = &[
    (1, "reserved:host"),
    (2, "reserved:world"),
    (6, "reserved:remote-node"),
    (7, "reserved:kube-apiserver"),
    (
        1001,
        "k8s:app=payments-admin-api,k8s:io.kubernetes.pod.namespace=payments",
    ),
    (
        1002,
        "k8s:app=payments-api,k8s:io.kubernetes.pod.namespace=payments",
    ),
    (1003, "k8s:app=toolbox,k8s:io.kubernetes.pod.namespace=ops"),
    (
        1004,
        "k8s:app=prometheus,k8s:io.kubernetes.pod.namespace=monitoring",
    ),
    (1005, "k8s:app=toolbox,k8s:io.kubernetes.pod.namespace=dev"),
    (1006, "k8s:app=web,k8s:io.kubernetes.pod.namespace=prod"),
    (1007, "k8s:app=front,k8s:io.kubernetes.pod.namespace=prod"),
];

/// The maps for `policies` in the default mode over the fixtures, without CIDR identities.
fn default_maps(policies: &[Policy]) -> super::desired::Desired {
    desired(
        policies,
        Enforcement::Default,
        &endpoints(),
        &identities(),
        &CidrIdentities::default(),
    )
}

fn identities() -> Vec<IdentityInput> {
    IDENTITIES
        .iter()
        .map(|(id, l)| IdentityInput {
            id: *id,
            labels: labels(l),
            // Pods carry `http` on 8080 (see `endpoints`).
            named_ports: if *id > 1000 {
                [("http".to_owned(), [8080].into())].into()
            } else {
                Default::default()
            },
        })
        .collect()
}

/// Every pod identity is a local endpoint whose endpoint id equals its identity.
fn endpoints() -> Vec<EndpointInput> {
    IDENTITIES
        .iter()
        .filter(|(id, _)| *id > 1000)
        .map(|(id, l)| EndpointInput {
            id: *id,
            labels: labels(l),
            named_ports: BTreeMap::from([("http".to_owned(), 8080)]),
        })
        .collect()
}

const SEED: &str = include_str!("../../../../examples/policies/admin-api-access.yaml");

const DENY_DEV: &str = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: deny-ops-9090, namespace: payments}
spec:
  endpointSelector: {matchLabels: {app: payments-admin-api}}
  ingressDeny:
    - fromEndpoints: [{matchLabels: {io.kubernetes.pod.namespace: ops}}]
      toPorts: [{ports: [{port: "9090", protocol: TCP}]}]
"#;

const MIXED: &str = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
    - fromEndpoints: [{matchLabels: {app: front}}]
      toPorts: [{ports: [{port: "8000", endPort: 8010, protocol: TCP}, {port: http}]}]
    - toPorts: [{ports: [{port: "53", protocol: ANY}]}]
  egress:
    - toEntities: [world, kube-apiserver]
      toPorts: [{ports: [{port: "443"}]}]
    - toEndpoints: [{}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: knp, namespace: dev}
spec:
  podSelector: {}
  ingress:
    - from: [{namespaceSelector: {}}]
      ports: [{port: 22}]
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: cluster-deny}
spec:
  endpointSelector: {matchLabels: {k8s:io.kubernetes.pod.namespace: prod}}
  egressDeny:
    - toEntities: [world]
      toPorts: [{ports: [{port: "25", protocol: TCP}]}]
  ingress:
    - fromEntities: [cluster]
      toPorts: [{ports: [{port: "9100", protocol: TCP}]}]
"#;

const PORTS: &[(u16, Protocol)] = &[
    (80, Protocol::Tcp),
    (443, Protocol::Tcp),
    (443, Protocol::Udp),
    (8080, Protocol::Tcp),
    (8005, Protocol::Tcp),
    (8011, Protocol::Tcp),
    (9090, Protocol::Tcp),
    (9100, Protocol::Tcp),
    (53, Protocol::Udp),
    (22, Protocol::Tcp),
    (25, Protocol::Tcp),
];

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        _ => 0,
    }
}

/// For every (endpoint, peer, port) and both directions, the map-based decision equals
/// `compute::decide` (the verdict, and 181 exactly when a deny rule matched).
fn assert_agreement(policies: &[Policy], enforcement: Enforcement) {
    let maps = desired(
        policies,
        enforcement,
        &endpoints(),
        &identities(),
        &CidrIdentities::default(),
    );
    let mut checked = 0;
    for ep in endpoints() {
        for (peer_id, peer_labels) in IDENTITIES {
            for (port, proto) in PORTS {
                for direction in [Direction::Ingress, Direction::Egress] {
                    let peer = Peer {
                        labels: labels(peer_labels),
                        cidr: None,
                    };
                    let l4 = L4 {
                        port: Some((*port, *proto)),
                        named_ports: ep.named_ports.clone(),
                        // Every pod names 8080 `http`.
                        cluster_named_ports: BTreeMap::from([("http".to_owned(), 8080)]),
                    };
                    let d = decide(policies, enforcement, &ep.labels, direction, &peer, &l4);
                    let m = lookup(
                        &maps,
                        ep.id,
                        dp_direction(direction),
                        *peer_id,
                        proto_number(*proto),
                        *port,
                    );
                    let expected = match d.verdict {
                        Verdict::Allowed => MapVerdict::Allowed,
                        Verdict::Denied if d.matched.iter().any(|m| m.action == "deny") => {
                            MapVerdict::Dropped(REASON_POLICY_DENY)
                        }
                        Verdict::Denied => MapVerdict::Dropped(REASON_POLICY_DENIED),
                    };
                    assert_eq!(
                        m, expected,
                        "ep {} {direction} peer {peer_labels} {port}/{proto}: {}",
                        ep.id, d.reason
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 1000, "{checked}");
}

#[test]
fn maps_agree_with_decide_on_the_seed_policies() {
    let mut p = policies(SEED);
    p.extend(policies(include_str!(
        "../../../../examples/policies/payments-egress.yaml"
    )));
    p.extend(policies(DENY_DEV));
    assert_agreement(&p, Enforcement::Default);
}

#[test]
fn maps_agree_with_decide_on_mixed_policies_and_modes() {
    let p = policies(MIXED);
    for mode in [
        Enforcement::Default,
        Enforcement::Always,
        Enforcement::Never,
    ] {
        assert_agreement(&p, mode);
    }
    assert_agreement(&[], Enforcement::Default);
    assert_agreement(&[], Enforcement::Always);
}

const EGRESS_NAMED: &str = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: to-web-http, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: front}}
  egress:
    - toEndpoints: [{matchLabels: {app: web}}]
      toPorts: [{ports: [{port: http, protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: any-http, namespace: ops}
spec:
  endpointSelector: {}
  egress:
    - toPorts: [{ports: [{port: http}]}]
    - toPorts: [{ports: [{port: metrics}]}]
"#;

#[test]
fn egress_named_ports_resolve_against_the_peer() {
    let p = policies(EGRESS_NAMED);
    assert_agreement(&p, Enforcement::Default);
    let maps = default_maps(&p);
    let lookup_egress =
        |ep, peer, port| lookup(&maps, ep, dp_direction(Direction::Egress), peer, 6, port);
    // front (1007) to web (1006): the peer names `http` 8080; nothing else is open.
    assert_eq!(lookup_egress(1007, 1006, 8080), MapVerdict::Allowed);
    assert_eq!(
        lookup_egress(1007, 1006, 9090),
        MapVerdict::Dropped(REASON_POLICY_DENIED)
    );
    assert_eq!(
        lookup_egress(1007, 1002, 8080),
        MapVerdict::Dropped(REASON_POLICY_DENIED)
    );
    // Open to any peer: the name resolves over every pod (identity 0 carries 8080);
    // `metrics` names no port anywhere, so it opens nothing.
    let ops = 1003;
    assert_eq!(lookup_egress(ops, 1002, 8080), MapVerdict::Allowed);
    assert_eq!(
        lookup_egress(ops, 1002, 9090),
        MapVerdict::Dropped(REASON_POLICY_DENIED)
    );
}

#[test]
fn a_new_identity_with_named_ports_gives_the_full_computation() {
    use super::incremental::{Incremental, Inputs};
    use crate::proxy::ProxyPorts;
    let p = policies(EGRESS_NAMED);
    let inputs = |ids: Vec<IdentityInput>| Inputs {
        policies: p.clone(),
        enforcement: Enforcement::Default,
        endpoints: endpoints(),
        identities: ids,
        cidrs: CidrIdentities::default(),
        proxies: ProxyPorts::default(),
    };
    let mut inc = Incremental::default();
    inc.update(inputs(identities()));
    let mut more = identities();
    more.push(IdentityInput {
        id: 1020,
        labels: labels("k8s:app=web,k8s:io.kubernetes.pod.namespace=prod,k8s:v=2"),
        named_ports: [("http".to_owned(), [8443].into())].into(),
    });
    let full = desired(
        &p,
        Enforcement::Default,
        &endpoints(),
        &more,
        &CidrIdentities::default(),
    );
    let (_, updated) = inc.update(inputs(more.clone()));
    assert_eq!(updated, &full);
    // `http` is now 8080 on some pods and 8443 on another: it resolves to nothing, as in
    // Cilium, and the plugin reports it.
    let egress = dp_direction(Direction::Egress);
    for (ep, peer, port) in [(1007, 1006, 8080), (1007, 1020, 8443), (1003, 1002, 8080)] {
        assert_eq!(
            lookup(&full, ep, egress, peer, 6, port),
            MapVerdict::Dropped(REASON_POLICY_DENIED),
            "{ep} -> {peer}:{port}"
        );
    }
    assert_eq!(
        super::desired::ambiguous_egress_port_names(&p, &more),
        vec![("http".to_owned(), [8080, 8443].into())]
    );
}

#[test]
fn default_deny_drops_with_133_and_deny_wins_with_181() {
    let mut p = policies(SEED);
    p.extend(policies(DENY_DEV));
    let maps = default_maps(&p);
    let ingress = dp_direction(Direction::Ingress);
    // ops -> admin-api:8080 allowed, dev -> admin-api denied by default deny.
    assert_eq!(
        lookup(&maps, 1001, ingress, 1003, 6, 8080),
        MapVerdict::Allowed
    );
    assert_eq!(
        lookup(&maps, 1001, ingress, 1005, 6, 8080),
        MapVerdict::Dropped(REASON_POLICY_DENIED)
    );
    // An allow for ops on any port plus a deny on 9090: the deny wins.
    p.extend(policies(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: all-ops, namespace: payments}\nspec:\n  endpointSelector: {}\n  ingress: [{fromEndpoints: [{matchLabels: {io.kubernetes.pod.namespace: ops}}]}]\n",
    ));
    let maps = default_maps(&p);
    assert_eq!(
        lookup(&maps, 1001, ingress, 1003, 6, 9090),
        MapVerdict::Dropped(REASON_POLICY_DENY)
    );
    assert_eq!(
        lookup(&maps, 1001, ingress, 1003, 6, 9091),
        MapVerdict::Allowed
    );
    // Egress is not enforced by these policies.
    let egress = dp_direction(Direction::Egress);
    assert_eq!(lookup(&maps, 1001, egress, 2, 6, 1), MapVerdict::Allowed);
}

#[test]
fn wildcards_use_zero_and_ranges_expand() {
    let p = policies(MIXED);
    let maps = default_maps(&p);
    let ingress = dp_direction(Direction::Ingress);
    // L4-only rule: any identity (0), any protocol (0), port 53.
    let any53 = PolicyKey {
        endpoint_id: 1006,
        identity: 0,
        dport: 53,
        proto: 0,
        direction: ingress,
    };
    assert!(maps.entries.contains_key(&any53));
    // 8000-8010 from front: 11 entries, the named port http = 8080, and 9100 from the
    // clusterwide `cluster` rule.
    let front: Vec<u16> = maps
        .entries
        .keys()
        .filter(|k| k.endpoint_id == 1006 && k.identity == 1007 && k.direction == ingress)
        .map(|k| k.dport)
        .collect();
    assert_eq!(front.len(), 13, "{front:?}");
    assert!(front.contains(&9100));
    assert!(front.contains(&8080));
    let big = policies(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: big, namespace: prod}\nspec:\n  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: \"1000\", endPort: 60000}]}]}]\n",
    );
    let problems = datapath_problems(&big[0]);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains("1000-60000"), "{}", problems[0]);
}

fn cnp(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
           "metadata": {"name": name, "namespace": "payments"}, "spec": spec})
}

#[test]
fn a_broken_policy_keeps_its_last_good_version() {
    let good = cnp(
        "a",
        json!({"endpointSelector": {}, "ingress": [{"fromEntities": ["cluster"]}]}),
    );
    let other = cnp(
        "b",
        json!({"endpointSelector": {}, "egress": [{"toEntities": ["world"]}]}),
    );
    let broken = cnp(
        "a",
        json!({"endpointSelector": {}, "ingress": [{"fromEntitiez": ["cluster"]}]}),
    );
    let mut loader = Loader::default();
    let first = loader.load(&[good.clone(), other.clone()]);
    assert!(first.problems.is_empty(), "{:?}", first.problems);
    let second = loader.load(&[broken.clone(), other.clone()]);
    assert_eq!(second.policies, first.policies);
    assert_eq!(second.problems.len(), 1, "{:?}", second.problems);
    let msg = &second.problems[0];
    assert!(msg.contains("CiliumNetworkPolicy payments/a"), "{msg}");
    assert!(msg.contains("spec.ingress[0]"), "{msg}");
    assert!(msg.contains("previous version stays enforced"), "{msg}");
    // Deleted: forgotten. New and broken: not enforced.
    let third = loader.load(std::slice::from_ref(&other));
    assert_eq!(third.policies.len(), 1);
    let fourth = loader.load(&[broken, other]);
    assert_eq!(fourth.policies.len(), 1);
    assert!(fourth.problems[0].contains("not enforced"));
}

#[derive(Default)]
struct FakeMaps {
    denies: Vec<PolicyEpKey>,
    entries: BTreeMap<PolicyKey, PolicyValue>,
    ops: usize,
    fail: bool,
}

impl PolicyWriter for FakeMaps {
    fn set_default_deny(&mut self, key: PolicyEpKey) -> Result<(), DatapathError> {
        self.ops += 1;
        self.denies.push(key);
        Ok(())
    }
    fn remove_default_deny(&mut self, key: PolicyEpKey) -> Result<(), DatapathError> {
        self.ops += 1;
        self.denies.retain(|k| *k != key);
        Ok(())
    }
    fn upsert(&mut self, key: PolicyKey, value: PolicyValue) -> Result<(), DatapathError> {
        self.ops += 1;
        if self.fail {
            return Err(DatapathError::MapMissing {
                map: "porin_policy",
            });
        }
        self.entries.insert(key, value);
        Ok(())
    }
    fn remove(&mut self, key: PolicyKey) -> Result<(), DatapathError> {
        self.ops += 1;
        self.entries.remove(&key);
        Ok(())
    }
}

#[test]
fn programmer_writes_only_differences_and_retries_failures() {
    let p = policies(SEED);
    let want = default_maps(&p);
    let mut maps = FakeMaps {
        fail: true,
        ..FakeMaps::default()
    };
    let mut prog = Programmer::default();
    let r = prog.sync(&want, &mut maps);
    assert!(!r.errors.is_empty());
    maps.fail = false;
    let r = prog.sync(&want, &mut maps);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(maps.entries, want.entries);
    assert_eq!(maps.denies.len(), want.default_deny.len());
    maps.ops = 0;
    assert_eq!(prog.sync(&want, &mut maps).writes, 0);
    assert_eq!(maps.ops, 0);
    // Removing the policies removes every entry and flag.
    let empty = default_maps(&[]);
    prog.sync(&empty, &mut maps);
    assert!(maps.entries.is_empty() && maps.denies.is_empty());
}

/// The seed's payments-egress: the DNS entry carries the DNS proxy's port, the toFQDNs entry allows 443/TCP to each selector's identity without
/// a proxy, and the DNS proxy lets payments-api resolve every name (`matchPattern: "*"`).
#[test]
fn payments_egress_steers_dns_to_the_proxy_and_allows_fqdn_identities() {
    use crate::compute::{FQDN_IDENTITY_BASE, referenced_fqdns};
    use crate::dns::DnsPolicy;
    use crate::proxy::DEFAULT_DNS_PROXY_PORT;

    let pols = policies(include_str!(
        "../../../../examples/policies/payments-egress.yaml"
    ));
    let mut ids = identities();
    ids.push(IdentityInput {
        id: 1010,
        labels: labels("k8s:k8s-app=kube-dns,k8s:io.kubernetes.pod.namespace=kube-system"),
        named_ports: Default::default(),
    });
    let mut local = CidrIdentities::default();
    local.update_fqdns(&referenced_fqdns(&pols));
    let fqdn_ids: Vec<u32> = local.fqdns().map(|(_, id)| id).collect();
    assert_eq!(
        fqdn_ids,
        vec![FQDN_IDENTITY_BASE + 1, FQDN_IDENTITY_BASE + 2]
    );
    let maps = desired(&pols, Enforcement::Default, &endpoints(), &ids, &local);
    let egress = dp_direction(Direction::Egress);
    let value = |identity: u32, proto: u8, dport: u16| {
        maps.entries.get(&PolicyKey {
            endpoint_id: 1002,
            identity,
            dport,
            proto,
            direction: egress,
        })
    };
    // `protocol: ANY` is one key with protocol 0, which UDP and TCP both match.
    let v = value(1010, 0, 53).expect("DNS entry");
    assert_eq!(v.proxy_port, DEFAULT_DNS_PROXY_PORT);
    for id in fqdn_ids {
        let v = value(id, 6, 443).expect("toFQDNs entry");
        assert_eq!(v.proxy_port, 0);
    }
    // World (an address no answer taught) is not allowed on 443.
    assert!(value(2, 6, 443).is_none());
    let dns = DnsPolicy::compute(&pols, &endpoints());
    assert!(dns.allows(1002, "anything.example.com"));
    assert!(
        !dns.allows(1001, "anything.example.com"),
        "no DNS rules: not redirected"
    );
}

/// admin-api-access: `ops` is allowed on 8080 without HTTP rules, `monitoring` with them.
/// Cilium redirects the whole port: ops' connections go to the HTTP proxy too (through the
/// port's marker entry), and a port without HTTP rules is not redirected.
#[test]
fn peers_without_http_rules_are_redirected_on_a_port_with_http_rules() {
    use crate::proxy::DEFAULT_HTTP_PROXY_PORT;
    use porin_core::datapath::abi::POLICY_L7_PORT_IDENTITY;

    let extra = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: ops-9090, namespace: payments}
spec:
  endpointSelector: {matchLabels: {app: payments-admin-api}}
  ingress:
    - fromEndpoints: [{matchLabels: {io.kubernetes.pod.namespace: ops}}]
      toPorts: [{ports: [{port: "9090", protocol: TCP}]}]
"#;
    let mut pols = policies(SEED);
    pols.extend(policies(extra));
    let maps = default_maps(&pols);
    let ingress = dp_direction(Direction::Ingress);
    let port = |identity: u32, dport: u16| proxy_port_of(&maps, 1001, ingress, identity, 6, dport);
    // monitoring through its own entry, ops through the port's marker.
    assert_eq!(port(1004, 8080), DEFAULT_HTTP_PROXY_PORT);
    assert_eq!(port(1003, 8080), DEFAULT_HTTP_PROXY_PORT);
    let ops_entry = maps.entries.get(&PolicyKey {
        endpoint_id: 1001,
        identity: 1003,
        dport: 8080,
        proto: 6,
        direction: ingress,
    });
    assert_eq!(ops_entry.map(|v| v.proxy_port), Some(0));
    // Not another port, and the marker allows nobody by itself.
    assert_eq!(port(1003, 9090), 0);
    assert_eq!(port(1005, 8080), 0);
    assert_eq!(
        lookup(&maps, 1001, ingress, 1005, 6, 8080),
        MapVerdict::Dropped(REASON_POLICY_DENIED)
    );
    let markers: Vec<_> = maps
        .entries
        .iter()
        .filter(|(k, _)| k.identity == POLICY_L7_PORT_IDENTITY)
        .map(|(k, v)| (k.endpoint_id, k.dport, k.proto, v.proxy_port))
        .collect();
    assert_eq!(markers, vec![(1001, 8080, 6, DEFAULT_HTTP_PROXY_PORT)]);
}
