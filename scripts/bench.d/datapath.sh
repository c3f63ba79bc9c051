#!/usr/bin/env bash
# scripts/bench datapath: what Porin's pod programs cost.
#
# Two sandboxes with the same cross-node topology (bench/datapath: bench/server on
# node-1, bench/client on node-2) are up at once, each in its own state directory:
#   porin: `porin sandbox up`          real agents, eBPF programs on every pod veth
#   plain: `porin sandbox up --plain`  same namespaces, veths, addresses and routes,
#                                      no agents and no programs
# Each round measures plain then porin: iperf3 throughput, then new TCP connections
# per second (porin-bench conn-client/conn-server). Medians of the rounds and the
# porin/plain ratios end up in the JSON line.
# Run through scripts/bench, which builds and sets PORIN_BIN, PORIN_BENCH_BIN,
# BENCH_ROOT and BENCH_QUICK.
set -euo pipefail
tool=$PORIN_BENCH_BIN
manifests=$BENCH_ROOT/bench/datapath

if [[ "$BENCH_QUICK" == 1 ]]; then
    rounds=3 iperf_s=4 conn_s=4
else
    rounds=7 iperf_s=15 conn_s=10
fi
conn_concurrency=${BENCH_CONN_CONCURRENCY:-8}
iperf_port=5201
conn_port=7000
topologies=(plain porin)
bench_name=datapath
# shellcheck source=lib/sandboxes.sh
source "$(dirname "$0")/lib/sandboxes.sh"

log "== datapath: $rounds rounds, iperf3 ${iperf_s}s, connections ${conn_s}s x $conn_concurrency threads"
log "== sandboxes (state in $work)"
sbx plain up --plain "$manifests" >&2
sbx porin up "$manifests" >&2

for topology in "${topologies[@]}"; do
    start_servers "$topology" $iperf_port $conn_port
    wait_reachable "$topology" "${server[$topology]}:$conn_port"
done

throughput() {  # throughput TOPOLOGY ROUND: prints Gbit/s
    iperf_gbps "$1" "$2" "${server[$1]}" $iperf_port "$iperf_s"
}

log "== measuring (plain, porin alternating)"
for ((round = 1; round <= rounds; round++)); do
    for topology in "${topologies[@]}"; do
        gbps=$(throughput "$topology" "$round")
        cps=$(conn_rate "$topology" "$round" "${server[$topology]}:$conn_port")
        echo "$topology throughput_gbps $gbps" >>"$samples"
        echo "$topology conn_per_s $cps" >>"$samples"
        printf '   round %d/%d  %-5s  %7.2f Gbit/s  %9.0f conn/s\n' \
            "$round" "$rounds" "$topology" "$gbps" "$cps" >&2
    done
done

duration=$((SECONDS - started))
line=$("$tool" summarize "$samples" --bench datapath --compare porin,plain \
    --ratio throughput=throughput_gbps --ratio conn_rate=conn_per_s \
    --set runs="$rounds" --set duration_s="$duration" \
    --set iperf_s="$iperf_s" --set conn_s="$conn_s" \
    --set conn_concurrency="$conn_concurrency" \
    --set quick="$([[ $BENCH_QUICK == 1 ]] && echo true || echo false)")
finish
log "== done in ${duration}s (sandboxes are removed on exit)"
echo "$line"
