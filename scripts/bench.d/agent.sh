#!/usr/bin/env bash
# scripts/bench agent: how fast an agent is ready and how much memory it holds.
#
# Brings up the quickstart sandbox (two nodes, six pods) with the release build and
# reports, per node: the time from process start to ready (the agent logs it), the
# idle resident memory after a few seconds, and the time to ready after a SIGKILL
# restart (which reopens pinned maps and links). The peer is the issue's budget
# (ready under 1 s, under 40 MB idle), so the JSON also carries those limits.
# Run through scripts/bench, which builds and sets PORIN_BIN, BENCH_ROOT, BENCH_QUICK.
set -euo pipefail
porin=$PORIN_BIN
manifests=$BENCH_ROOT/examples/quickstart
restarts=5
[[ "$BENCH_QUICK" == 1 ]] && restarts=2

work=$(mktemp -d /tmp/porin-bench-agent.XXXXXX)
export PORIN_SANDBOX_DIR=$work
cleanup() { "$porin" sandbox down >&2 || true; rm -rf "$work"; }
trap cleanup EXIT

echo "== sandbox up ($manifests)" >&2
"$porin" sandbox up "$manifests" >&2
sleep 5

rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
agent_pids() { python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
print(" ".join(str(n["agent_pid"]) for n in s["nodes"]))' "$work/state.json"; }

start_ms=$(grep -ho 'agent ready.*elapsed_ms=[0-9]*' "$work"/logs/agent_*.log | grep -o '[0-9]*$' | sort -n | tail -1)
max_rss=0
for pid in $(agent_pids); do
    r=$(rss_kb "$pid")
    echo "  agent pid $pid: ${r} kB resident" >&2
    (( r > max_rss )) && max_rss=$r
done

restart_ms=()
for i in $(seq "$restarts"); do
    for node in node-1 node-2; do
        ms=$("$porin" sandbox restart-agent "$node" --kill | grep -o 'ready in [0-9]*' | grep -o '[0-9]*')
        echo "  restart $i $node: ready in ${ms} ms" >&2
        restart_ms+=("$ms")
    done
done
max_restart=$(printf '%s\n' "${restart_ms[@]}" | sort -n | tail -1)
median_restart=$(printf '%s\n' "${restart_ms[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')

printf '{"bench":"agent","nodes":2,"pods":6,"start_to_ready_ms_max":%s,"idle_rss_mb_max":%.1f,"restart_to_ready_ms_median":%s,"restart_to_ready_ms_max":%s,"restarts":%s,"budget_ready_ms":1000,"budget_rss_mb":40}\n' \
    "$start_ms" "$(awk -v k="$max_rss" 'BEGIN { print k / 1024 }')" "$median_restart" "$max_restart" "${#restart_ms[@]}"
