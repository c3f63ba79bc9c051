//! `porin policy trace`: the source's egress and the destination's ingress.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use super::cidr::{CidrIdentities, cidr_peer, fqdn_peer, referenced_fqdns, referenced_prefixes};
use super::peer::{L4, Peer};
use super::verdict::{Decision, Verdict, decide};
use crate::Enforcement;
use crate::dns::NamePattern;
use crate::model::{Direction, FqdnSelector, Policy};

/// Both sides of a new connection and the overall verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    pub verdict: Verdict,
    pub egress: Decision,
    pub ingress: Decision,
    /// Addresses outside the cluster and the identity the ipcache gives them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<ResolvedAddress>,
    /// `--dst-fqdn`: the name and the `toFQDNs` selector whose identity its addresses get.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_fqdn: Option<ResolvedName>,
    /// The HTTP request through the L7 proxy, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<super::HttpTrace>,
}

/// A DNS name resolved as the DNS proxy would: the first `toFQDNs` selector of the policies
/// (in the order the agent numbers them) that matches it, or none (`world`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedName {
    pub name: String,
    pub identity: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<FqdnSelector>,
}

/// The peer that the addresses of `name` are to policy once the DNS proxy learned them
/// from an allowed answer: an FQDN selector's identity, or `world` if no selector matches.
pub fn resolve_fqdn(policies: &[Policy], name: &str) -> (Peer, ResolvedName) {
    let mut ids = CidrIdentities::default();
    ids.update_fqdns(&referenced_fqdns(policies));
    let found = ids
        .fqdns()
        .find(|(s, _)| NamePattern::from_selector(s).matches(name))
        .map(|(s, id)| (s.clone(), id));
    match found {
        Some((selector, identity)) => (
            fqdn_peer(&selector),
            ResolvedName {
                name: name.to_owned(),
                identity,
                selector: Some(selector),
            },
        ),
        None => (
            cidr_peer(None),
            ResolvedName {
                name: name.to_owned(),
                identity: super::cidr::WORLD_IDENTITY,
                selector: None,
            },
        ),
    }
}

/// An address resolved as the datapath's ipcache would: the longest prefix the policies
/// reference that contains it, with its local CIDR identity, or `world`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedAddress {
    /// `source` or `destination`.
    pub side: &'static str,
    pub address: IpAddr,
    pub identity: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<IpNet>,
}

/// The peer an address outside the cluster is to policy, given the policies in force:
/// exactly what the agent writes into the ipcache and the datapath looks up.
pub fn resolve_address(
    policies: &[Policy],
    side: &'static str,
    address: IpAddr,
) -> (Peer, ResolvedAddress) {
    let ids = CidrIdentities::for_prefixes(&referenced_prefixes(policies));
    let (identity, prefix) = ids.lookup(address);
    let resolved = ResolvedAddress {
        side,
        address,
        identity,
        prefix,
    };
    (cidr_peer(prefix), resolved)
}

/// Evaluate a new connection from `src` to `dst`.
pub fn trace(
    policies: &[Policy],
    enforcement: Enforcement,
    src: &Peer,
    dst: &Peer,
    l4: &L4,
) -> Trace {
    let side = |endpoint: &Peer, other: &Peer, direction: Direction| {
        if endpoint.is_pod() {
            decide(
                policies,
                enforcement,
                &endpoint.labels,
                direction,
                other,
                l4,
            )
        } else {
            Decision {
                verdict: Verdict::Allowed,
                enforced: false,
                reason: format!(
                    "{} is not a pod endpoint: its {direction} is not subject to endpoint policy",
                    describe(endpoint)
                ),
                matched: vec![],
                notes: vec![],
            }
        }
    };
    let egress = side(src, dst, Direction::Egress);
    let ingress = side(dst, src, Direction::Ingress);
    let verdict = if egress.verdict == Verdict::Allowed && ingress.verdict == Verdict::Allowed {
        Verdict::Allowed
    } else {
        Verdict::Denied
    };
    Trace {
        verdict,
        egress,
        ingress,
        addresses: Vec::new(),
        dst_fqdn: None,
        http: None,
    }
}

fn describe(peer: &Peer) -> String {
    match (peer.labels.reserved(), peer.cidr) {
        (Some(r), _) => format!("reserved:{r}"),
        (None, Some(c)) => c.to_string(),
        (None, None) => peer.labels.to_string(),
    }
}
