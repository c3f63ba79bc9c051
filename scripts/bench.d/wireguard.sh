#!/usr/bin/env bash
# scripts/bench wireguard: pod-to-pod throughput across nodes through Porin's
# userspace WireGuard device, through wireguard-go, and unencrypted.
#
# Three sandboxes with the same cross-node topology (bench/datapath: bench/server on
# node-1, bench/client on node-2) are up at once, each in its own state directory and
# with real agents; only [plugins.encryption] differs:
#   porin:        enabled, userspace = "porin"         (`porin wireguard`, gotatun)
#   wireguard_go: enabled, userspace = "wireguard-go"  (Debian's wireguard-go)
#   plain:        encryption off (the underlay route, no tunnel)
# Each round measures the three in turn with one iperf3 TCP stream in the client pod;
# the JSON line holds the medians and porin / wireguard-go.
# Run through scripts/bench, which builds and sets PORIN_BIN, PORIN_BENCH_BIN,
# BENCH_ROOT and BENCH_QUICK.
set -euo pipefail
manifests=$BENCH_ROOT/bench/datapath

if [[ "$BENCH_QUICK" == 1 ]]; then
    rounds=3 iperf_s=4
else
    rounds=7 iperf_s=15
fi
iperf_port=5201
conn_port=7000
bench_name=wireguard
topologies=(porin wireguard_go plain)
# shellcheck source=lib/sandboxes.sh
source "$(dirname "$0")/lib/sandboxes.sh"

printf '[plugins.encryption]\nenabled = true\nuserspace = "porin"\n' >"$work/porin.toml"
printf '[plugins.encryption]\nenabled = true\nuserspace = "wireguard-go"\n' >"$work/wireguard_go.toml"
printf '# encryption off\n' >"$work/plain.toml"

log "== wireguard: $rounds rounds, iperf3 ${iperf_s}s, one TCP stream"
log "== sandboxes (state in $work)"
for topology in "${topologies[@]}"; do
    sbx "$topology" up --agent-config "$work/$topology.toml" "$manifests" >&2
    start_servers "$topology" $iperf_port $conn_port
done
for topology in "${topologies[@]}"; do
    wait_reachable "$topology" "${server[$topology]}:$conn_port"
done

# The tunnels really carry the traffic: both encrypted sandboxes report a handshake
# with the other node through the configured implementation.
for topology in porin wireguard_go; do
    PORIN_SANDBOX_DIR=$work/$topology "$PORIN_BIN" encrypt status -o json >"$work/status-$topology.json"
    python3 - "$work/status-$topology.json" "$topology" <<'PY'
import json, sys
want = sys.argv[2].replace("_", "-")
for node in json.load(open(sys.argv[1])):
    peers = node.get("peers") or []
    if node.get("implementation") != want or not any(p.get("latest_handshake") for p in peers):
        sys.exit("%s: %s has no handshake with %s: %s" % (sys.argv[2], node.get("node"), want, node))
PY
done
log "   porin and wireguard_go: both nodes have a handshake through the expected device"

throughput() {  # throughput TOPOLOGY ROUND: prints Gbit/s
    iperf_gbps "$1" "$2" "${server[$1]}" $iperf_port "$iperf_s"
}

log "== measuring (${topologies[*]} in turn)"
for ((round = 1; round <= rounds; round++)); do
    for topology in "${topologies[@]}"; do
        gbps=$(throughput "$topology" "$round")
        echo "$topology $gbps" >>"$samples"
        printf '   round %d/%d  %-12s  %7.3f Gbit/s\n' "$round" "$rounds" "$topology" "$gbps" >&2
    done
done

of() { awk -v t="$1" '$1 == t { print $2 }' "$samples" | median; }
porin_gbps=$(of porin)
go_gbps=$(of wireguard_go)
plain_gbps=$(of plain)
duration=$((SECONDS - started))
line=$(python3 - "$porin_gbps" "$go_gbps" "$plain_gbps" "$rounds" "$duration" "$iperf_s" "$BENCH_QUICK" <<'PY'
import json, sys
porin, go, plain = (float(v) for v in sys.argv[1:4])
rounds, duration, seconds, quick = (int(v) for v in sys.argv[4:8])
print(json.dumps({
    "bench": "wireguard",
    "porin_gbps": round(porin, 3),
    "wireguard_go_gbps": round(go, 3),
    "plain_gbps": round(plain, 3),
    "ratio_vs_wireguard_go": round(porin / go, 2) if go > 0 else None,
    "ratio_porin_vs_plain": round(porin / plain, 2) if plain > 0 else None,
    "runs": rounds, "duration_s": duration, "iperf_s": seconds, "quick": quick == 1,
}, separators=(",", ":")))
PY
)
finish
log "== done in ${duration}s (sandboxes are removed on exit)"
echo "$line"
