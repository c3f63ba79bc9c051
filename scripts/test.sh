#!/usr/bin/env bash
# The whole test suite, as CI runs it. Privileged tests (BPF_PROG_TEST_RUN, network
# namespaces) need root and fail, rather than skip, without it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $EUID -ne 0 ]]; then
    echo "test: the suite loads eBPF programs and makes network namespaces: run as root (sudo make test)" >&2
    exit 1
fi

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== tests"
# Namespace tests make their own uniquely named namespaces, so they may run in parallel;
# two threads match the two cores CI has.
cargo test --workspace --locked -- --test-threads=2
