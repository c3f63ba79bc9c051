//! `scripts/bench wasm`: the cheapest filter (keeps everything), to measure
//! the host's marshalling plus the call.
use porin_wasm_guest::{Flow, filter};

filter!(fn keep(_flow: &Flow) -> bool { true });
