//! `porin policy trace`: the source's egress and the destination's ingress.

use serde::Serialize;

use super::peer::{L4, Peer};
use super::verdict::{Decision, Verdict, decide};
use crate::Enforcement;
use crate::model::{Direction, Policy};

/// Both sides of a new connection and the overall verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    pub verdict: Verdict,
    pub egress: Decision,
    pub ingress: Decision,
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
    }
}

fn describe(peer: &Peer) -> String {
    match (peer.labels.reserved(), peer.cidr) {
        (Some(r), _) => format!("reserved:{r}"),
        (None, Some(c)) => c.to_string(),
        (None, None) => peer.labels.to_string(),
    }
}
