//! Local CIDR identities, as Cilium allocates them: one identity per prefix that a
//! policy references (in `fromCIDR`, `toCIDR`, `*CIDRSet` and their `except`, and
//! NetworkPolicy `ipBlock`), entered into the ipcache with the prefix. The datapath's
//! longest-prefix match then gives every address outside the cluster the identity of
//! the most specific referenced prefix that contains it, or `world` (2) when none does.
//! That is what makes `except` work: an address inside an exception resolves to the
//! exception's own identity, which the rule does not select.
//!
//! `0.0.0.0/0` and `::/0` are not allocated: they are `world` itself, as in Cilium
//! (`pkg/labels/cidr.go`: the zero-length prefix carries `reserved:world`).
//! Pods and nodes keep their own identities inside a referenced prefix: core gives their
//! /32 entries precedence, so CIDR rules never select cluster endpoints (Cilium's
//! default `policy-cidr-match-mode`).
//!
//! The same local scope holds one identity per `toFQDNs` selector (from
//! [`FQDN_IDENTITY_BASE`] on): the DNS proxy enters every address an allowed answer gives
//! for a selected name into the ipcache as a /32 with that identity, so the policy
//! entries, computed once per selector, never change when names resolve. Such a peer
//! carries `reserved:world` and `fqdn:<selector>` labels, like Cilium's FQDN identities.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::peer::Peer;
use crate::model::{FqdnSelector, Label, Labels, Policy};

/// The first local (node-scoped) identity, Cilium's `IdentityScopeLocal`.
pub const LOCAL_IDENTITY_SCOPE: u32 = 1 << 24;
/// Cilium's reserved `world` identity.
pub const WORLD_IDENTITY: u32 = 2;

/// The first identity of `toFQDNs` selectors (CIDR identities stay below it).
pub const FQDN_IDENTITY_BASE: u32 = LOCAL_IDENTITY_SCOPE | 0x0080_0000;
/// The label source of FQDN selector identities.
pub const FQDN_LABEL_SOURCE: &str = "fqdn";

/// Prefixes and FQDN selectors referenced by policies and their local identities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrIdentities {
    by_prefix: BTreeMap<IpNet, u32>,
    by_fqdn: BTreeMap<FqdnSelector, u32>,
}

/// Every prefix the policies reference (rules and exceptions), host bits cleared,
/// without the zero-length prefixes (`world`).
pub fn referenced_prefixes(policies: &[Policy]) -> BTreeSet<IpNet> {
    let mut out = BTreeSet::new();
    let entries = policies
        .iter()
        .flat_map(|p| p.rules.iter())
        .flat_map(|r| r.entries());
    for c in entries.flat_map(|e| e.peers.cidrs.iter()) {
        out.insert(c.cidr.trunc());
        out.extend(c.except.iter().map(IpNet::trunc));
    }
    out.retain(|p| p.prefix_len() > 0);
    out
}

impl CidrIdentities {
    /// Identities for `prefixes` numbered in order: what an agent that starts with these
    /// policies, and `porin policy trace`, compute.
    pub fn for_prefixes(prefixes: &BTreeSet<IpNet>) -> Self {
        let mut out = Self::default();
        out.update(prefixes);
        out
    }

    /// Keeps the identity of prefixes still referenced, frees the others and gives new
    /// prefixes the lowest free local identities, so a policy change rewrites only the
    /// policy entries of prefixes that came or went.
    pub fn update(&mut self, prefixes: &BTreeSet<IpNet>) {
        self.by_prefix.retain(|p, _| prefixes.contains(p));
        let used: BTreeSet<u32> = self.by_prefix.values().copied().collect();
        let mut free = (LOCAL_IDENTITY_SCOPE + 1..).filter(|id| !used.contains(id));
        for prefix in prefixes {
            if !self.by_prefix.contains_key(prefix)
                && let Some(id) = free.next()
            {
                self.by_prefix.insert(*prefix, id);
            }
        }
    }

    /// Keeps the identities of selectors still referenced and numbers new ones with the
    /// lowest free FQDN identities.
    pub fn update_fqdns(&mut self, selectors: &BTreeSet<FqdnSelector>) {
        self.by_fqdn.retain(|s, _| selectors.contains(s));
        let used: BTreeSet<u32> = self.by_fqdn.values().copied().collect();
        let mut free = (FQDN_IDENTITY_BASE + 1..).filter(|id| !used.contains(id));
        for s in selectors {
            if !self.by_fqdn.contains_key(s)
                && let Some(id) = free.next()
            {
                self.by_fqdn.insert(s.clone(), id);
            }
        }
    }

    /// The FQDN selectors and their identities.
    pub fn fqdns(&self) -> impl Iterator<Item = (&FqdnSelector, u32)> + '_ {
        self.by_fqdn.iter().map(|(s, id)| (s, *id))
    }

    pub fn iter(&self) -> impl Iterator<Item = (IpNet, u32)> + '_ {
        self.by_prefix.iter().map(|(p, id)| (*p, *id))
    }

    pub fn len(&self) -> usize {
        self.by_prefix.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_prefix.is_empty()
    }

    /// The identity and prefix the datapath's LPM lookup gives an address outside the
    /// cluster: the longest referenced prefix containing it, else `world`.
    pub fn lookup(&self, ip: IpAddr) -> (u32, Option<IpNet>) {
        self.by_prefix
            .iter()
            .filter(|(p, _)| p.contains(&ip))
            .max_by_key(|(p, _)| p.prefix_len())
            .map_or((WORLD_IDENTITY, None), |(p, id)| (*id, Some(*p)))
    }

    /// The peer an identity stands for, as policy selection sees it.
    pub fn peers(&self) -> impl Iterator<Item = (u32, Peer)> + '_ {
        self.iter()
            .map(|(prefix, id)| (id, cidr_peer(Some(prefix))))
            .chain(self.fqdns().map(|(s, id)| (id, fqdn_peer(s))))
    }
}

/// Every `toFQDNs` selector the policies reference.
pub fn referenced_fqdns(policies: &[Policy]) -> BTreeSet<FqdnSelector> {
    policies
        .iter()
        .flat_map(|p| p.rules.iter())
        .flat_map(|r| r.entries())
        .flat_map(|e| e.peers.fqdns.iter().cloned())
        .collect()
}

/// The label an FQDN selector's identity carries.
pub fn fqdn_label(selector: &FqdnSelector) -> Label {
    let key = match selector {
        FqdnSelector::MatchName(n) => format!("matchName={n}"),
        FqdnSelector::MatchPattern(p) => format!("matchPattern={p}"),
    };
    Label::new(FQDN_LABEL_SOURCE, &key, "")
}

/// The peer of an FQDN selector's identity: `reserved:world` and `fqdn:<selector>`.
pub fn fqdn_peer(selector: &FqdnSelector) -> Peer {
    let mut peer = cidr_peer(None);
    peer.labels.insert(fqdn_label(selector));
    peer
}

/// A peer outside the cluster: `reserved:world` and, for a CIDR identity, its prefix.
pub fn cidr_peer(prefix: Option<IpNet>) -> Peer {
    let mut labels = Labels::default();
    labels.insert(Label::new("reserved", "world", ""));
    Peer {
        labels,
        cidr: prefix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("prefix")
    }

    fn set(list: &[&str]) -> BTreeSet<IpNet> {
        list.iter().map(|s| net(s)).collect()
    }

    #[test]
    fn longest_prefix_wins_and_unmatched_is_world() {
        let ids = CidrIdentities::for_prefixes(&set(&["10.0.0.0/8", "10.96.0.0/12"]));
        let (a, pa) = ids.lookup("10.1.2.3".parse().expect("ip"));
        let (b, pb) = ids.lookup("10.100.0.1".parse().expect("ip"));
        assert_eq!(pa, Some(net("10.0.0.0/8")));
        assert_eq!(pb, Some(net("10.96.0.0/12")));
        assert!(a > LOCAL_IDENTITY_SCOPE && b > LOCAL_IDENTITY_SCOPE && a != b);
        assert_eq!(
            ids.lookup("8.8.8.8".parse().expect("ip")),
            (WORLD_IDENTITY, None)
        );
    }

    #[test]
    fn update_keeps_existing_numbers() {
        let mut ids = CidrIdentities::for_prefixes(&set(&["10.0.0.0/8", "192.168.0.0/16"]));
        let before: BTreeMap<IpNet, u32> = ids.iter().collect();
        ids.update(&set(&["1.0.0.0/8", "192.168.0.0/16"]));
        let after: BTreeMap<IpNet, u32> = ids.iter().collect();
        assert_eq!(
            after[&net("192.168.0.0/16")],
            before[&net("192.168.0.0/16")]
        );
        // The freed number of 10.0.0.0/8 is reused.
        assert_eq!(after[&net("1.0.0.0/8")], before[&net("10.0.0.0/8")]);
        assert_eq!(ids.len(), 2);
    }
}
