//! CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy rules (`spec`, `specs`).

use serde_json::{Map, Value};

use super::ports::to_ports;
use super::selector::{KeyStyle, selector};
use super::walk::{Cx, index, join};
use crate::model::{
    CidrRule, DefaultDeny, Entity, FqdnSelector, PeerRule, Peers, Rule, Selector, Subject,
};

/// Fields Cilium has that porin does not implement yet: rejected with a clear message.
const UNSUPPORTED: &[&str] = &[
    "fromRequires",
    "toRequires",
    "fromGroups",
    "toGroups",
    "fromNodes",
    "toNodes",
    "icmps",
    "authentication",
];

/// One rule object; `namespace` is `None` for CCNP (cluster-wide selectors).
pub fn rule(cx: &mut Cx, v: &Value, path: &str, namespace: Option<&str>) -> Option<Rule> {
    let keys = [
        "endpointSelector",
        "nodeSelector",
        "ingress",
        "ingressDeny",
        "egress",
        "egressDeny",
        "enableDefaultDeny",
        "description",
        "labels",
        "log",
    ];
    let map = cx.object(v, path, &keys)?;
    let subject = subject(cx, map, path, namespace);
    let section = |cx: &mut Cx, name: &str, deny: bool, ingress: bool| {
        map.get(name)
            .map(|s| peer_rules(cx, s, &join(path, name), namespace, deny, ingress))
            .unwrap_or_default()
    };
    let ingress = section(cx, "ingress", false, true);
    let ingress_deny = section(cx, "ingressDeny", true, true);
    let egress = section(cx, "egress", false, false);
    let egress_deny = section(cx, "egressDeny", true, false);
    // Judged on what was written, so an invalid entry is not also reported as "no rules".
    let written = |name: &str| {
        map.get(name)
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    };
    if !["ingress", "ingressDeny", "egress", "egressDeny"]
        .iter()
        .any(|s| written(s))
    {
        cx.error(
            path,
            "the rule has no ingress, ingressDeny, egress or egressDeny entry, so it selects \
             nothing and Cilium 1.17 rejects it (cilium/cilium#35558); an empty list such as \
             `ingress: []` does not deny anything. To deny all traffic in a direction, write \
             one empty rule: `ingress: [{}]` and/or `egress: [{}]`",
        );
    }
    let mut default_deny = DefaultDeny {
        ingress: !ingress.is_empty() || !ingress_deny.is_empty(),
        egress: !egress.is_empty() || !egress_deny.is_empty(),
    };
    if let Some(dd) = map.get("enableDefaultDeny") {
        let dpath = join(path, "enableDefaultDeny");
        if let Some(dd) = cx.object(dd, &dpath, &["ingress", "egress"]) {
            if let Some(b) = dd
                .get("ingress")
                .and_then(|b| cx.bool(b, &join(&dpath, "ingress")))
            {
                default_deny.ingress = b;
            }
            if let Some(b) = dd
                .get("egress")
                .and_then(|b| cx.bool(b, &join(&dpath, "egress")))
            {
                default_deny.egress = b;
            }
        }
    }
    Some(Rule {
        path: path.to_owned(),
        subject: subject?,
        ingress,
        egress,
        ingress_deny,
        egress_deny,
        default_deny,
    })
}

fn subject(
    cx: &mut Cx,
    map: &Map<String, Value>,
    path: &str,
    namespace: Option<&str>,
) -> Option<Subject> {
    match (map.get("endpointSelector"), map.get("nodeSelector")) {
        (Some(_), Some(_)) => {
            cx.error(
                path,
                "endpointSelector and nodeSelector are mutually exclusive",
            );
            None
        }
        (None, None) => {
            cx.error(path, "one of endpointSelector or nodeSelector is required");
            None
        }
        (Some(s), None) => {
            let s = selector(cx, s, &join(path, "endpointSelector"), KeyStyle::Cilium)?;
            // A CNP only ever selects pods of its own namespace.
            Some(Subject::Endpoints(match namespace {
                Some(ns) => s.in_namespace(ns),
                None => s,
            }))
        }
        (None, Some(_)) if namespace.is_some() => {
            cx.error(
                &join(path, "nodeSelector"),
                "only a CiliumClusterwideNetworkPolicy may select nodes",
            );
            None
        }
        (None, Some(s)) => {
            selector(cx, s, &join(path, "nodeSelector"), KeyStyle::Cilium).map(Subject::Nodes)
        }
    }
}

fn peer_rules(
    cx: &mut Cx,
    v: &Value,
    path: &str,
    namespace: Option<&str>,
    deny: bool,
    ingress: bool,
) -> Vec<PeerRule> {
    let items = cx.list(v, path).unwrap_or_default();
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| peer_rule(cx, item, &index(path, i), namespace, deny, ingress))
        .collect()
}

fn peer_rule(
    cx: &mut Cx,
    v: &Value,
    path: &str,
    namespace: Option<&str>,
    deny: bool,
    ingress: bool,
) -> Option<PeerRule> {
    let (endpoints, entities, cidr, cidr_set) = if ingress {
        ("fromEndpoints", "fromEntities", "fromCIDR", "fromCIDRSet")
    } else {
        ("toEndpoints", "toEntities", "toCIDR", "toCIDRSet")
    };
    let mut keys = vec![endpoints, entities, cidr, cidr_set, "toPorts"];
    if !ingress && !deny {
        keys.extend(["toFQDNs", "toServices"]);
    }
    keys.extend(UNSUPPORTED);
    let map = cx.object(v, path, &keys)?;
    for key in UNSUPPORTED.iter().filter(|k| map.contains_key(**k)) {
        cx.error(&join(path, key), "is not supported by porin yet");
    }
    let before = cx.problems.len();
    let mut peers = Peers::default();
    if let Some(list) = map.get(endpoints) {
        let lpath = join(path, endpoints);
        for (i, s) in cx.list(list, &lpath).unwrap_or_default().iter().enumerate() {
            if let Some(s) = selector(cx, s, &index(&lpath, i), KeyStyle::Cilium) {
                peers.endpoints.push(scope(s, namespace));
            }
        }
    }
    if let Some(list) = map.get(entities) {
        let lpath = join(path, entities);
        for (i, e) in cx.list(list, &lpath).unwrap_or_default().iter().enumerate() {
            let epath = index(&lpath, i);
            let Some(name) = cx.string(e, &epath) else {
                continue;
            };
            match Entity::parse(name) {
                Some(e) => peers.entities.push(e),
                None => cx.error(&epath, format!("unknown entity {name:?} (expected all, world, cluster, host, remote-node, kube-apiserver, health, init, unmanaged or ingress)")),
            }
        }
    }
    if let Some(list) = map.get(cidr) {
        let lpath = join(path, cidr);
        for (i, c) in cx.list(list, &lpath).unwrap_or_default().iter().enumerate() {
            if let Some(net) = parse_cidr(cx, c, &index(&lpath, i)) {
                peers.cidrs.push(CidrRule {
                    cidr: net,
                    except: vec![],
                });
            }
        }
    }
    if let Some(list) = map.get(cidr_set) {
        let lpath = join(path, cidr_set);
        for (i, c) in cx.list(list, &lpath).unwrap_or_default().iter().enumerate() {
            if let Some(rule) = cidr_rule(cx, c, &index(&lpath, i)) {
                peers.cidrs.push(rule);
            }
        }
    }
    if let Some(list) = map.get("toFQDNs") {
        let lpath = join(path, "toFQDNs");
        for (i, f) in cx.list(list, &lpath).unwrap_or_default().iter().enumerate() {
            let fpath = index(&lpath, i);
            let Some(f) = cx.object(f, &fpath, &["matchName", "matchPattern"]) else {
                continue;
            };
            if let Some(n) = f
                .get("matchName")
                .and_then(|n| cx.string(n, &join(&fpath, "matchName")))
            {
                peers.fqdns.push(FqdnSelector::MatchName(n.to_owned()));
            }
            if let Some(p) = f
                .get("matchPattern")
                .and_then(|p| cx.string(p, &join(&fpath, "matchPattern")))
            {
                peers.fqdns.push(FqdnSelector::MatchPattern(p.to_owned()));
            }
        }
    }
    if let Some(list) = map.get("toServices") {
        peers.services = cx
            .list(list, &join(path, "toServices"))
            .unwrap_or_default()
            .to_vec();
    }
    let to_ports = map
        .get("toPorts")
        .map(|p| to_ports(cx, p, &join(path, "toPorts"), !deny))
        .unwrap_or_default();
    // No L3 field at all: the rule is L4-only and applies to every peer
    // (Cilium: "Layer 4 rules without an L3 selector apply to all endpoints").
    let has_l3 = [endpoints, entities, cidr, cidr_set, "toFQDNs", "toServices"]
        .iter()
        .any(|k| {
            map.get(*k)
                .is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
        });
    peers.wildcard = !has_l3 && !to_ports.is_empty();
    (cx.problems.len() == before).then(|| PeerRule {
        path: path.to_owned(),
        peers,
        to_ports,
    })
}

/// CNP peer selectors select pods of the policy's namespace unless they name one.
fn scope(s: Selector, namespace: Option<&str>) -> Selector {
    match namespace {
        Some(ns) if !s.names_namespace() => s.in_namespace(ns),
        _ => s,
    }
}

fn cidr_rule(cx: &mut Cx, v: &Value, path: &str) -> Option<CidrRule> {
    let map = cx.object(v, path, &["cidr", "except", "cidrGroupRef"])?;
    if map.contains_key("cidrGroupRef") {
        cx.error(&join(path, "cidrGroupRef"), "is not supported by porin yet");
        return None;
    }
    let Some(c) = map.get("cidr") else {
        cx.error(&join(path, "cidr"), "is missing");
        return None;
    };
    let cidr = parse_cidr(cx, c, &join(path, "cidr"))?;
    let mut except = Vec::new();
    if let Some(list) = map.get("except") {
        let epath = join(path, "except");
        for (i, e) in cx.list(list, &epath).unwrap_or_default().iter().enumerate() {
            let ipath = index(&epath, i);
            let Some(net) = parse_cidr(cx, e, &ipath) else {
                continue;
            };
            if cidr.contains(&net) {
                except.push(net);
            } else {
                cx.error(&ipath, format!("{net} is not inside {cidr}"));
            }
        }
    }
    Some(CidrRule { cidr, except })
}

/// `10.0.0.0/8`, or a bare address meaning a single host.
pub fn parse_cidr(cx: &mut Cx, v: &Value, path: &str) -> Option<ipnet::IpNet> {
    let s = cx.string(v, path)?;
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
        .or_else(|| {
            cx.error(path, format!("invalid CIDR {s:?}"));
            None
        })
}
