//! Keep only what needs attention: dropped flows and DNS answers with an error.
use porin_wasm_guest::{Flow, L7, Verdict, filter};

filter!(
    fn keep(flow: &Flow) -> bool {
        match flow.l7() {
            L7::Dns { rcode, .. } => rcode != 0,
            _ => flow.verdict() == Verdict::Dropped,
        }
    }
);
