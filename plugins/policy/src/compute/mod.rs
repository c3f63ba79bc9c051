//! Policy computation: pure functions from policies and labels to verdicts.

pub mod cidr;
mod l7;
mod peer;
mod trace;
mod verdict;

pub use cidr::{CidrIdentities, cidr_peer, referenced_prefixes};
pub use l7::{ConnectionFilter, HttpFilter, HttpSide, HttpTrace, HttpVerdict};
pub use peer::{L4, Peer};
pub use trace::{ResolvedAddress, Trace, resolve_address, trace};
pub use verdict::{Decision, RuleMatch, Verdict, decide};

#[cfg(test)]
mod tests;
