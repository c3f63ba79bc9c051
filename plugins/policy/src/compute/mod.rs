//! Policy computation: pure functions from policies and labels to verdicts.

pub mod cidr;
mod l7;
mod peer;
mod trace;
mod verdict;

pub use cidr::{
    CidrIdentities, FQDN_IDENTITY_BASE, cidr_peer, fqdn_label, fqdn_peer, referenced_fqdns,
    referenced_prefixes,
};
pub use l7::{ConnectionFilter, HttpFilter, HttpSide, HttpTrace, HttpVerdict};
pub use peer::{L4, Peer};
pub use trace::{ResolvedAddress, ResolvedName, Trace, resolve_address, resolve_fqdn, trace};
pub use verdict::{Decision, RuleMatch, Verdict, decide};

#[cfg(test)]
mod tests;
