//! Kubernetes `networking.k8s.io/v1` NetworkPolicy, translated into the common model.

use serde_json::Value;

use super::cilium::parse_cidr;
use super::ports::{Style, ports};
use super::selector::{KeyStyle, selector};
use super::walk::{Cx, index, join};
use crate::model::{
    CidrRule, DefaultDeny, L7Rules, Operator, POD_NAMESPACE, PeerRule, Peers, PortRule,
    Requirement, Rule, Subject,
};

/// The `spec` of a NetworkPolicy in `namespace`.
pub fn spec(cx: &mut Cx, v: &Value, namespace: &str) -> Option<Rule> {
    let path = "spec";
    let map = cx.object(
        v,
        path,
        &["podSelector", "policyTypes", "ingress", "egress"],
    )?;
    let subject = match map.get("podSelector") {
        Some(s) => selector(cx, s, "spec.podSelector", KeyStyle::PodLabels)
            .map(|s| Subject::Endpoints(s.in_namespace(namespace))),
        None => {
            cx.error("spec.podSelector", "is missing");
            None
        }
    };
    // Kubernetes: without policyTypes, Ingress always, Egress when an egress section exists.
    let mut default_deny = DefaultDeny {
        ingress: true,
        egress: map.contains_key("egress"),
    };
    if let Some(types) = map.get("policyTypes") {
        default_deny = DefaultDeny::default();
        let tpath = join(path, "policyTypes");
        for (i, t) in cx.strings(types, &tpath).iter().enumerate() {
            match t.as_str() {
                "Ingress" => default_deny.ingress = true,
                "Egress" => default_deny.egress = true,
                other => cx.error(
                    &index(&tpath, i),
                    format!("invalid policy type {other:?} (expected Ingress or Egress)"),
                ),
            }
        }
    }
    let section = |cx: &mut Cx, name: &str, peers_key: &str, enabled: bool| {
        let Some(list) = map.get(name) else {
            return Vec::new();
        };
        let spath = join(path, name);
        let rules: Vec<PeerRule> = cx
            .list(list, &spath)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, r)| peer_rule(cx, r, &index(&spath, i), peers_key, namespace))
            .collect();
        // Sections whose type is not in policyTypes are ignored, as in Kubernetes.
        if enabled { rules } else { Vec::new() }
    };
    let ingress = section(cx, "ingress", "from", default_deny.ingress);
    let egress = section(cx, "egress", "to", default_deny.egress);
    Some(Rule {
        path: path.to_owned(),
        subject: subject?,
        ingress,
        egress,
        ingress_deny: Vec::new(),
        egress_deny: Vec::new(),
        default_deny,
    })
}

fn peer_rule(
    cx: &mut Cx,
    v: &Value,
    path: &str,
    peers_key: &str,
    namespace: &str,
) -> Option<PeerRule> {
    let map = cx.object(v, path, &[peers_key, "ports"])?;
    let before = cx.problems.len();
    let mut peers = Peers::default();
    let list = match map.get(peers_key) {
        Some(l) => cx.list(l, &join(path, peers_key)).unwrap_or_default(),
        None => &[],
    };
    // An empty or missing from/to matches every peer, inside or outside the cluster.
    peers.wildcard = list.is_empty();
    for (i, p) in list.iter().enumerate() {
        peer(
            cx,
            p,
            &index(&join(path, peers_key), i),
            namespace,
            &mut peers,
        );
    }
    let port_list = map
        .get("ports")
        .map(|p| ports(cx, p, &join(path, "ports"), Style::Kubernetes))
        .unwrap_or_default();
    let to_ports = if port_list.is_empty() {
        Vec::new()
    } else {
        vec![PortRule {
            ports: port_list,
            l7: L7Rules::default(),
        }]
    };
    (cx.problems.len() == before).then(|| PeerRule {
        path: path.to_owned(),
        peers,
        to_ports,
    })
}

fn peer(cx: &mut Cx, v: &Value, path: &str, namespace: &str, peers: &mut Peers) {
    let Some(map) = cx.object(v, path, &["podSelector", "namespaceSelector", "ipBlock"]) else {
        return;
    };
    if let Some(block) = map.get("ipBlock") {
        if map.len() > 1 {
            cx.error(
                path,
                "ipBlock cannot be combined with podSelector or namespaceSelector",
            );
            return;
        }
        let bpath = join(path, "ipBlock");
        let Some(b) = cx.object(block, &bpath, &["cidr", "except"]) else {
            return;
        };
        let Some(cidr) = b
            .get("cidr")
            .and_then(|c| parse_cidr(cx, c, &join(&bpath, "cidr")))
        else {
            if !b.contains_key("cidr") {
                cx.error(&join(&bpath, "cidr"), "is missing");
            }
            return;
        };
        let mut except = Vec::new();
        if let Some(list) = b.get("except") {
            let epath = join(&bpath, "except");
            for (i, e) in cx.list(list, &epath).unwrap_or_default().iter().enumerate() {
                if let Some(net) = parse_cidr(cx, e, &index(&epath, i)) {
                    except.push(net);
                }
            }
        }
        peers.cidrs.push(CidrRule { cidr, except });
        return;
    }
    let pods = map
        .get("podSelector")
        .and_then(|s| selector(cx, s, &join(path, "podSelector"), KeyStyle::PodLabels));
    let namespaces = map.get("namespaceSelector").and_then(|s| {
        selector(
            cx,
            s,
            &join(path, "namespaceSelector"),
            KeyStyle::NamespaceLabels,
        )
    });
    let selector = match (map.contains_key("namespaceSelector"), pods, namespaces) {
        // podSelector alone: pods of the policy's namespace.
        (false, Some(p), _) => p.in_namespace(namespace),
        // namespaceSelector (with or without podSelector): pods of matching namespaces.
        (true, pods, Some(mut ns)) => {
            ns.requirements.push(Requirement {
                source: "k8s".into(),
                key: POD_NAMESPACE.into(),
                operator: Operator::Exists,
            });
            if let Some(p) = pods {
                ns.requirements.extend(p.requirements);
            } else if map.contains_key("podSelector") {
                return; // the podSelector was invalid and reported
            }
            ns
        }
        (false, None, _) if !map.contains_key("podSelector") => {
            cx.error(
                path,
                "a peer needs podSelector, namespaceSelector or ipBlock",
            );
            return;
        }
        _ => return,
    };
    peers.endpoints.push(selector);
}
