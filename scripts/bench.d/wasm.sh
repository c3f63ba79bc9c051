#!/usr/bin/env bash
# scripts/bench wasm: the WebAssembly filter stage and pipeline (issue #6).
#
# Builds the guests (examples/wasm for wasm32-unknown-unknown, release) and
# porin-wasm-bench (release), then measures on one core, in one process:
#   - the call shapes the contract was chosen from (plain core call, 64-byte
#     buffer + call, component list<u8>, component batch, new instance);
#   - flows/s through the filter stage (marshalling + guest call, batches of 256)
#     with a trivial filter, a filter reading namespace, verdict and port, and
#     the team labeller;
#   - the pipeline (decode + enrich, filter, ring) with that filter as WASM and
#     the same filter compiled natively, alternating in the same run;
#   - reload: compile + instantiate + init + swap of a changed file.
# No namespaces or eBPF: it runs the agent's own pipeline code on generated events.
# Run through scripts/bench, which sets BENCH_ROOT and BENCH_QUICK.
set -euo pipefail
root=$BENCH_ROOT
cargo=${CARGO:-cargo}
target_dir=${CARGO_TARGET_DIR:-$root/target}
[[ "$target_dir" = /* ]] || target_dir=$root/$target_dir
guests=$target_dir/wasm-guests

echo "== build guests (wasm32-unknown-unknown) and porin-wasm-bench" >&2
"$cargo" build --release --locked --offline --target wasm32-unknown-unknown \
    --manifest-path "$root/examples/wasm/Cargo.toml" --target-dir "$guests" >&2
(cd "$root" && "$cargo" build --release --locked -p porin-wasm-bench) >&2

args=(--guests "$guests/wasm32-unknown-unknown/release")
[[ "$BENCH_QUICK" == 1 ]] && args+=(--quick)
exec "$target_dir/release/porin-wasm-bench" "${args[@]}"
