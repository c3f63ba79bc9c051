//! Which HTTP rules apply to a connection, and the verdict on one request.
//!
//! Cilium's semantics: the L3/L4 decision comes first. When it allows the
//! connection and some matching allow entry carries `rules.http` on the port,
//! the port is redirected to the proxy and requests are checked against the
//! union of the HTTP rules of the matching entries. A matching entry without
//! HTTP rules (for example `ops` with the port only) allows every request of
//! the peers it selects; their connections still go through the proxy when
//! the port has HTTP rules for other peers (Cilium redirects the whole port),
//! so their requests become L7 flows. Both sides count: the source's egress
//! and the destination's ingress must each allow the request.

use serde::Serialize;

use super::peer::{L4, Peer};
use super::verdict::{Verdict, decide};
use crate::Enforcement;
use crate::model::{
    Direction, HttpRequest, HttpRequestView, HttpRule, Labels, Policy, Port, PortRule, Subject,
};

/// What the proxy does with requests of one direction of a connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "rules")]
pub enum HttpFilter {
    /// No HTTP rules apply: every request passes (the connection is allowed).
    AllowAll,
    /// The peer is allowed without HTTP rules on a port that has HTTP rules for other
    /// peers: the connection goes through the proxy and every request passes (Cilium's
    /// allow-all L7 rule for that peer).
    ProxiedAllowAll,
    /// Only requests matching one of these rules pass.
    Rules(Vec<HttpRule>),
    /// The connection itself is denied at L3/L4.
    DenyAll,
}

impl HttpFilter {
    /// The filter of `direction` of the endpoint labelled `subject`, whose
    /// other side is `peer`.
    pub fn for_direction(
        policies: &[Policy],
        enforcement: Enforcement,
        subject: &Labels,
        direction: Direction,
        peer: &Peer,
        l4: &L4,
    ) -> Self {
        let decision = decide(policies, enforcement, subject, direction, peer, l4);
        let l4 = &*l4.seen_from(direction);
        if decision.verdict == Verdict::Denied {
            return Self::DenyAll;
        }
        if decision.matched.is_empty() {
            return Self::AllowAll;
        }
        let mut rules = Vec::new();
        let mut allow_all = false;
        // Some entry, for any peer, has HTTP rules on this very port (the datapath's
        // marker entry: every allowed connection on the port goes to the proxy).
        let mut port_has_http = false;
        for policy in policies {
            for rule in &policy.rules {
                if !matches!(&rule.subject, Subject::Endpoints(s) if s.matches(subject)) {
                    continue;
                }
                for entry in rule.section(direction, false) {
                    let matching = l4.matching(&entry.to_ports);
                    let http = match matching {
                        Some(Some(port_rule)) if !port_rule.l7.http.is_empty() => {
                            port_has_http |= names_a_port(port_rule);
                            Some(&port_rule.l7.http)
                        }
                        _ => None,
                    };
                    if !peer.selected_by_peers(&entry.peers) {
                        continue;
                    }
                    match (matching, http) {
                        (None, _) => {}
                        (Some(_), Some(http)) => rules.extend(http.iter().cloned()),
                        // An allow without HTTP rules on this port: all requests.
                        (Some(_), None) => allow_all = true,
                    }
                }
            }
        }
        match (allow_all || rules.is_empty(), port_has_http) {
            (true, true) => Self::ProxiedAllowAll,
            (true, false) => Self::AllowAll,
            (false, _) => Self::Rules(rules),
        }
    }

    /// Whether requests go through the proxy at all.
    pub fn needs_proxy(&self) -> bool {
        matches!(self, Self::Rules(_) | Self::ProxiedAllowAll)
    }

    /// The verdict on `request`, with the rule that allows it.
    pub fn check(&self, request: &dyn HttpRequestView) -> HttpVerdict<'_> {
        match self {
            Self::AllowAll | Self::ProxiedAllowAll => HttpVerdict::Allowed(None),
            Self::DenyAll => HttpVerdict::Denied,
            Self::Rules(rules) => match rules.iter().find(|r| r.matches(request)) {
                Some(rule) => HttpVerdict::Allowed(Some(rule)),
                None => HttpVerdict::Denied,
            },
        }
    }
}

/// Whether a `toPorts` entry with HTTP rules names ports (not every port): only those
/// ports are redirected for every peer (the policy engine's marker entries).
fn names_a_port(rule: &PortRule) -> bool {
    rule.ports.iter().any(|p| p.port != Port::Any)
}

/// The proxy's decision on one request in one direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HttpVerdict<'r> {
    /// Allowed by this rule, or by no HTTP rule at all (`None`).
    Allowed(Option<&'r HttpRule>),
    Denied,
}

impl HttpVerdict<'_> {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed(_))
    }
}

/// Both sides of a connection: the source's egress and the destination's ingress.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectionFilter {
    pub egress: HttpFilter,
    pub ingress: HttpFilter,
}

impl ConnectionFilter {
    /// Every request passes (before the first computation).
    pub fn default_allow() -> Self {
        Self {
            egress: HttpFilter::AllowAll,
            ingress: HttpFilter::AllowAll,
        }
    }

    pub fn new(
        policies: &[Policy],
        enforcement: Enforcement,
        src: &Peer,
        dst: &Peer,
        l4: &L4,
    ) -> Self {
        let side = |endpoint: &Peer, other: &Peer, direction| {
            if endpoint.is_pod() {
                HttpFilter::for_direction(
                    policies,
                    enforcement,
                    &endpoint.labels,
                    direction,
                    other,
                    l4,
                )
            } else {
                HttpFilter::AllowAll
            }
        };
        Self {
            egress: side(src, dst, Direction::Egress),
            ingress: side(dst, src, Direction::Ingress),
        }
    }

    /// Whether `request` may pass both sides.
    pub fn allows(&self, request: &dyn HttpRequestView) -> bool {
        self.egress.check(request).is_allowed() && self.ingress.check(request).is_allowed()
    }

    /// Whether any side has HTTP rules (the port is redirected to the proxy).
    pub fn needs_proxy(&self) -> bool {
        self.egress.needs_proxy() || self.ingress.needs_proxy()
    }
}

/// One side of an offline HTTP trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpSide {
    pub verdict: Verdict,
    pub reason: String,
}

/// `porin policy trace --http-method M --http-path P`: the request through
/// the proxy as the agent would judge it (403 when DENIED).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpTrace {
    pub method: String,
    pub path: String,
    pub verdict: Verdict,
    /// Whether the port is redirected to the L7 proxy for this connection.
    pub proxied: bool,
    pub egress: HttpSide,
    pub ingress: HttpSide,
}

impl ConnectionFilter {
    /// Judge `request` on both sides, with reasons.
    pub fn trace(&self, request: &HttpRequest) -> HttpTrace {
        let side = |filter: &HttpFilter, direction: Direction| {
            let (verdict, reason) = match (filter, filter.check(request)) {
                (HttpFilter::DenyAll, _) => (
                    Verdict::Denied,
                    format!("the connection is denied at L3/L4 ({direction})"),
                ),
                (HttpFilter::AllowAll, _) => (
                    Verdict::Allowed,
                    format!("no HTTP rules apply at {direction}"),
                ),
                (HttpFilter::ProxiedAllowAll, _) => (
                    Verdict::Allowed,
                    format!(
                        "allowed by an allow-all L7 rule for this peer at {direction} (the port has HTTP rules for other peers: the request goes through the proxy)"
                    ),
                ),
                (_, HttpVerdict::Allowed(Some(rule))) => {
                    (Verdict::Allowed, format!("allowed by HTTP rule ({rule})"))
                }
                (_, _) => (
                    Verdict::Denied,
                    format!(
                        "no HTTP rule at {direction} matches {} {}: the proxy answers 403 Access denied",
                        request.method, request.path
                    ),
                ),
            };
            HttpSide { verdict, reason }
        };
        let egress = side(&self.egress, Direction::Egress);
        let ingress = side(&self.ingress, Direction::Ingress);
        let verdict = if egress.verdict == Verdict::Allowed && ingress.verdict == Verdict::Allowed {
            Verdict::Allowed
        } else {
            Verdict::Denied
        };
        HttpTrace {
            method: request.method.clone(),
            path: request.path.clone(),
            verdict,
            proxied: self.needs_proxy(),
            egress,
            ingress,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;
    use crate::parse::parse_file;

    const ADMIN: &str = include_str!("../../../../examples/policies/admin-api-access.yaml");
    const ADMIN_API: &str = "k8s:app=payments-admin-api,k8s:io.kubernetes.pod.namespace=payments";

    fn pod(labels: &str) -> Peer {
        Peer {
            labels: Labels::parse_list(labels).expect("labels"),
            cidr: None,
        }
    }

    fn filter(src: &str, port: u16) -> ConnectionFilter {
        let parsed = parse_file("admin-api-access.yaml", ADMIN);
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        let l4 = L4 {
            port: Some((port, Protocol::Tcp)),
            ..L4::default()
        };
        ConnectionFilter::new(
            &parsed.policies,
            Enforcement::Default,
            &pod(src),
            &pod(ADMIN_API),
            &l4,
        )
    }

    fn req(method: &str, path: &str) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            path: path.into(),
            ..HttpRequest::default()
        }
    }

    #[test]
    fn monitoring_may_only_get_metrics() {
        let f = filter(
            "k8s:app=prometheus,k8s:io.kubernetes.pod.namespace=monitoring",
            8080,
        );
        assert!(f.needs_proxy());
        assert_eq!(f.egress, HttpFilter::AllowAll);
        assert!(f.allows(&req("GET", "/metrics")));
        assert!(!f.allows(&req("POST", "/metrics")));
        assert!(!f.allows(&req("DELETE", "/metrics")));
        assert!(!f.allows(&req("GET", "/admin")));
        assert!(!f.allows(&req("GET", "/metrics/../admin")));
        let t = f.trace(&req("POST", "/metrics"));
        assert_eq!(t.verdict, Verdict::Denied);
        assert!(t.ingress.reason.contains("403"), "{t:?}");
        assert_eq!(t.egress.verdict, Verdict::Allowed);
    }

    #[test]
    fn ops_has_full_access() {
        let f = filter(
            "k8s:app=ops-toolbox,k8s:io.kubernetes.pod.namespace=ops",
            8080,
        );
        // Redirected like monitoring (the port has HTTP rules), with allow-all at L7.
        assert!(f.needs_proxy());
        assert_eq!(f.ingress, HttpFilter::ProxiedAllowAll);
        assert!(f.allows(&req("POST", "/admin/users")));
        assert!(f.allows(&req("GET", "/metrics")));
        let t = f.trace(&req("POST", "/anything"));
        assert_eq!(t.verdict, Verdict::Allowed);
        assert!(t.proxied, "{t:?}");
        assert!(t.ingress.reason.contains("allow-all L7 rule"), "{t:?}");
    }

    #[test]
    fn a_port_without_http_rules_is_not_proxied() {
        let yaml = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: prod}\nspec:\n  endpointSelector: {matchLabels: {app: api}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {app: web}}]\n    toPorts: [{ports: [{port: \"80\", protocol: TCP}], rules: {http: [{method: GET}]}}]\n  - fromEndpoints: [{matchLabels: {app: other}}]\n";
        let parsed = parse_file("p.yaml", yaml);
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        let api = pod("k8s:app=api,k8s:io.kubernetes.pod.namespace=prod");
        let other = pod("k8s:app=other,k8s:io.kubernetes.pod.namespace=prod");
        let at = |port| {
            let l4 = L4 {
                port: Some((port, Protocol::Tcp)),
                ..L4::default()
            };
            ConnectionFilter::new(&parsed.policies, Enforcement::Default, &other, &api, &l4)
        };
        // An L3-only allow: redirected on 80 (the port has HTTP rules), not on 81.
        assert_eq!(at(80).ingress, HttpFilter::ProxiedAllowAll);
        assert_eq!(at(81).ingress, HttpFilter::AllowAll);
        assert!(!at(81).needs_proxy());
    }

    #[test]
    fn other_namespaces_and_ports_are_denied_at_l4() {
        let f = filter("k8s:app=x,k8s:io.kubernetes.pod.namespace=default", 8080);
        assert_eq!(f.ingress, HttpFilter::DenyAll);
        assert!(!f.allows(&req("GET", "/metrics")));
        let f = filter(
            "k8s:app=prometheus,k8s:io.kubernetes.pod.namespace=monitoring",
            9090,
        );
        assert_eq!(f.ingress, HttpFilter::DenyAll);
    }

    #[test]
    fn rules_of_several_entries_are_united() {
        let yaml = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: prod}\nspec:\n  endpointSelector: {matchLabels: {app: api}}\n  ingress:\n  - toPorts: [{ports: [{port: \"80\", protocol: TCP}], rules: {http: [{method: GET, path: \"/a\"}]}}]\n  - fromEndpoints: [{matchLabels: {app: web}}]\n    toPorts: [{ports: [{port: \"80\", protocol: TCP}], rules: {http: [{method: POST, path: \"/b/.*\"}]}}]\n";
        let parsed = parse_file("p.yaml", yaml);
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        let l4 = L4 {
            port: Some((80, Protocol::Tcp)),
            ..L4::default()
        };
        let api = pod("k8s:app=api,k8s:io.kubernetes.pod.namespace=prod");
        let web = pod("k8s:app=web,k8s:io.kubernetes.pod.namespace=prod");
        let other = pod("k8s:app=other,k8s:io.kubernetes.pod.namespace=prod");
        let from_web =
            ConnectionFilter::new(&parsed.policies, Enforcement::Default, &web, &api, &l4);
        assert!(from_web.allows(&req("GET", "/a")));
        assert!(from_web.allows(&req("POST", "/b/c")));
        let from_other =
            ConnectionFilter::new(&parsed.policies, Enforcement::Default, &other, &api, &l4);
        assert!(from_other.allows(&req("GET", "/a")));
        assert!(!from_other.allows(&req("POST", "/b/c")));
    }
}
