//! Policy computation: pure functions from policies and labels to verdicts.

mod peer;
mod trace;
mod verdict;

pub use peer::{L4, Peer};
pub use trace::{Trace, trace};
pub use verdict::{Decision, RuleMatch, Verdict, decide};

#[cfg(test)]
mod tests;
