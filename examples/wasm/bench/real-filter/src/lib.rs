//! `scripts/bench wasm`: a filter reading namespace, verdict and port. Keeps
//! drops, and forwarded flows except those into `kube-system` or to port 8080.
//! Its native twin is in the benchmark (`native_keep`).
use porin_wasm_guest::{Flow, Verdict, filter};

filter!(fn keep(flow: &Flow) -> bool {
    let dst = flow.destination();
    flow.verdict() == Verdict::Dropped || (dst.namespace() != "kube-system" && dst.port() != 8080)
});
