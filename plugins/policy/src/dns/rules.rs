//! Which DNS names each local endpoint may ask for: the union of the `rules.dns` of the
//! egress rules that select it (`toPorts[].rules.dns[]`, each `matchName` or
//! `matchPattern`), and the `toFQDNs` selectors whose answers become FQDN identities.
//!
//! Simplification against Cilium, documented in docs/fqdn.md: the allow-list is per
//! endpoint, not per (endpoint, DNS server, port); a query the datapath redirected is
//! checked against every DNS rule of its endpoint.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::pattern::NamePattern;
use crate::enforce::desired::EndpointInput;
use crate::model::{FqdnSelector, Policy, Subject};

/// A `rules.dns` entry that is not `{matchName: S}` or `{matchPattern: S}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{policy} {path}: {message}")]
pub struct DnsRuleError {
    pub policy: String,
    pub path: String,
    pub message: String,
}

/// One `rules.dns` entry.
pub fn dns_rule(v: &Value) -> Result<NamePattern, String> {
    let Some(map) = v.as_object() else {
        return Err("expected an object with matchName or matchPattern".into());
    };
    if let Some(k) = map
        .keys()
        .find(|k| *k != "matchName" && *k != "matchPattern")
    {
        return Err(format!(
            "unknown field `{k}` (expected matchName or matchPattern)"
        ));
    }
    match (map.get("matchName"), map.get("matchPattern")) {
        (Some(Value::String(n)), None) => Ok(NamePattern::match_name(n)),
        (None, Some(Value::String(p))) => Ok(NamePattern::match_pattern(p)),
        (Some(_), Some(_)) => Err("give matchName or matchPattern, not both".into()),
        _ => Err("matchName or matchPattern must be a string".into()),
    }
}

/// The DNS allow-lists of local endpoints and the FQDN selectors in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsPolicy {
    /// Endpoint id -> the names it may resolve. Endpoints without DNS rules are absent
    /// (their DNS is never redirected).
    pub allowed: BTreeMap<u32, BTreeSet<NamePattern>>,
    /// Every `toFQDNs` selector of the policies, in a stable order.
    pub fqdn_selectors: BTreeSet<FqdnSelectorKey>,
    /// Rules that could not be read (they allow nothing).
    pub errors: Vec<DnsRuleError>,
}

/// An FQDN selector as a sortable key.
pub type FqdnSelectorKey = (u8, String);

/// The key of a selector: (0, name) for matchName, (1, pattern) for matchPattern.
pub fn selector_key(s: &FqdnSelector) -> FqdnSelectorKey {
    match s {
        FqdnSelector::MatchName(n) => (0, n.clone()),
        FqdnSelector::MatchPattern(p) => (1, p.clone()),
    }
}

impl DnsPolicy {
    pub fn compute(policies: &[Policy], endpoints: &[EndpointInput]) -> Self {
        let mut out = Self::default();
        for policy in policies {
            for rule in &policy.rules {
                for entry in rule.entries() {
                    out.fqdn_selectors
                        .extend(entry.peers.fqdns.iter().map(selector_key));
                }
                let selected: Vec<u32> = endpoints
                    .iter()
                    .filter(
                        |e| matches!(&rule.subject, Subject::Endpoints(s) if s.matches(&e.labels)),
                    )
                    .map(|e| e.id)
                    .collect();
                for (i, entry) in rule.egress.iter().enumerate() {
                    for (j, ports) in entry.to_ports.iter().enumerate() {
                        for (k, v) in ports.l7.dns.iter().enumerate() {
                            match dns_rule(v) {
                                Ok(p) => {
                                    for ep in &selected {
                                        out.allowed.entry(*ep).or_default().insert(p.clone());
                                    }
                                }
                                Err(message) => out.errors.push(DnsRuleError {
                                    policy: policy.source.to_string(),
                                    path: format!(
                                        "{}.egress[{i}].toPorts[{j}].rules.dns[{k}]",
                                        rule.path
                                    ),
                                    message,
                                }),
                            }
                        }
                        // An entry with DNS rules but no readable one still redirects:
                        // the endpoint is known, with nothing allowed.
                        if !ports.l7.dns.is_empty() {
                            for ep in &selected {
                                out.allowed.entry(*ep).or_default();
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Whether endpoint `ep` may resolve `name`.
    pub fn allows(&self, ep: u32, name: &str) -> bool {
        self.allowed
            .get(&ep)
            .is_some_and(|set| set.iter().any(|p| p.matches(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dns_rule_forms() {
        assert_eq!(
            dns_rule(&json!({"matchPattern": "*"})),
            Ok(NamePattern::All)
        );
        assert!(dns_rule(&json!({"matchName": 3})).is_err());
        assert!(dns_rule(&json!({"matchNames": "x"})).is_err());
        assert!(dns_rule(&json!({"matchName": "a", "matchPattern": "b"})).is_err());
    }
}
