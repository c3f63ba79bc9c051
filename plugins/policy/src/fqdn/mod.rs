//! FQDN identities: addresses from allowed DNS answers enter the ipcache under the
//! identity of the `toFQDNs` selectors their names match (see `compute::cidr` for the
//! identities), before the answer reaches the pod; they expire after their TTL (raised to
//! a minimum) unless a live connection uses them, with caps per name and per endpoint.
//! They are kept on disk ([`persist`]) and restored when the agent restarts.

mod cache;
pub mod persist;

pub use cache::{FqdnCache, FqdnLimits, LearnOutcome, Learned};
