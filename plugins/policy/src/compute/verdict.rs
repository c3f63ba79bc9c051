//! The decision for one direction of one endpoint: the pure function the
//! datapath's policy map and the UI's hints will be derived from.

use serde::Serialize;

use super::peer::{L4, Peer};
use crate::Enforcement;
use crate::model::{Direction, Labels, Policy, PolicyRef, Rule, Subject};

/// ALLOWED or DENIED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Allowed,
    Denied,
}

/// A rule that matched the connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleMatch {
    pub policy: PolicyRef,
    /// Field path of the matching entry, e.g. `spec.egress[2]`.
    pub rule: String,
    /// `allow` or `deny`.
    pub action: &'static str,
    /// L7 rules on the matching port, enforced by the proxy (not evaluated offline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l7: Option<String>,
}

/// The decision for one direction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub verdict: Verdict,
    /// Whether the endpoint is in default deny in this direction.
    pub enforced: bool,
    pub reason: String,
    pub matched: Vec<RuleMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Decide a new connection in `direction` of the endpoint with `subject` labels,
/// whose other side is `peer`. Replies of allowed connections are not decided
/// here: conntrack lets them through, as in Cilium.
pub fn decide(
    policies: &[Policy],
    enforcement: Enforcement,
    subject: &Labels,
    direction: Direction,
    peer: &Peer,
    l4: &L4,
) -> Decision {
    let l4 = &*l4.seen_from(direction);
    let selecting: Vec<(&PolicyRef, &Rule)> = policies
        .iter()
        .flat_map(|p| p.rules.iter().map(move |r| (&p.source, r)))
        .filter(|(_, r)| matches!(&r.subject, Subject::Endpoints(s) if s.matches(subject)))
        .collect();
    if enforcement == Enforcement::Never {
        return Decision {
            verdict: Verdict::Allowed,
            enforced: false,
            reason: "policy enforcement is \"never\"".into(),
            matched: vec![],
            notes: vec![],
        };
    }
    let denies = matches(&selecting, direction, true, peer, l4);
    let enforced = enforcement == Enforcement::Always
        || selecting.iter().any(|(_, r)| r.default_deny(direction));
    if !denies.is_empty() {
        return Decision {
            verdict: Verdict::Denied,
            enforced,
            reason: "denied by a deny rule (deny takes precedence over allow)".into(),
            matched: denies,
            notes: vec![],
        };
    }
    let allows = matches(&selecting, direction, false, peer, l4);
    if !allows.is_empty() {
        return Decision {
            verdict: Verdict::Allowed,
            enforced,
            reason: "allowed by policy".into(),
            matched: allows,
            notes: vec![],
        };
    }
    if !enforced {
        let reason = if selecting.is_empty() {
            format!("no policy selects the endpoint: {direction} is not enforced")
        } else {
            format!("no rule selecting the endpoint enables default deny at {direction}")
        };
        return Decision {
            verdict: Verdict::Allowed,
            enforced,
            reason,
            matched: vec![],
            notes: vec![],
        };
    }
    Decision {
        verdict: Verdict::Denied,
        enforced,
        reason: format!("default deny at {direction}: no rule allows this connection"),
        matched: vec![],
        notes: unevaluated(&selecting, direction, peer, l4),
    }
}

fn matches(
    selecting: &[(&PolicyRef, &Rule)],
    direction: Direction,
    deny: bool,
    peer: &Peer,
    l4: &L4,
) -> Vec<RuleMatch> {
    let mut out = Vec::new();
    for (policy, rule) in selecting {
        for entry in rule.section(direction, deny) {
            if !peer.selected_by_peers(&entry.peers) {
                continue;
            }
            let Some(port_rule) = l4.matching(&entry.to_ports) else {
                continue;
            };
            let l7 = port_rule.filter(|p| !p.l7.is_empty()).map(|p| {
                let kind = if p.l7.http.is_empty() { "DNS" } else { "HTTP" };
                format!("{kind} rules apply on this port (L7, not evaluated offline)")
            });
            out.push(RuleMatch {
                policy: (*policy).clone(),
                rule: entry.path.clone(),
                action: if deny { "deny" } else { "allow" },
                l7,
            });
        }
    }
    out
}

/// Rules that might allow the connection but need information we do not have offline.
fn unevaluated(
    selecting: &[(&PolicyRef, &Rule)],
    direction: Direction,
    peer: &Peer,
    l4: &L4,
) -> Vec<String> {
    let mut notes = Vec::new();
    for (policy, rule) in selecting {
        for entry in rule.section(direction, false) {
            if l4.matching(&entry.to_ports).is_none() {
                continue;
            }
            if !entry.peers.fqdns.is_empty() && peer.is_world() && !peer.is_fqdn() {
                notes.push(format!(
                    "{policy} {} allows toFQDNs on this port: needs FQDN policy: the destination's DNS name decides (trace it with --dst-fqdn NAME)",
                    entry.path
                ));
            }
            if !entry.peers.services.is_empty() {
                notes.push(format!(
                    "{policy} {} allows toServices: not evaluated offline",
                    entry.path
                ));
            }
        }
    }
    notes
}
