#!/usr/bin/env bash
# scripts/bench lb: connection rate to a ClusterIP while N services exist, and the time
# to program them, for Porin (socket LB and per-packet LB) and kube-proxy's iptables
# and nftables modes, all in one run.
#
# Four sandboxes with the same pods (bench/server-1..4 on node-1 running
# `porin-bench accept-server 7000`, bench/client on node-2) are up at once, each in its
# own state directory:
#   socket:    agents with `[plugins.lb] enabled = true` (socket LB, the default)
#   perpacket: agents with `socket_lb = false` (DNAT in the pod program)
#   maglev:    agents with `algorithm = "maglev"` (socket LB picking through Maglev
#              tables of M = 16381); only when asked for in BENCH_LB_TOPOLOGIES: its
#              tables cost M * 4 bytes per service and node (6.5 GB at 100,000). The
#              kernel memory of the tables (bpftool's memlock of every inner map) is
#              recorded per node at each N.
#   iptables:  `sandbox up --plain` (no agents, no eBPF) + kube-proxy's iptables rules
#              in node-2's namespace, loaded with iptables-restore
#   nftables:  `sandbox up --plain` + kube-proxy's nftables table, loaded with nft -f
# For each N (10, 1,000, 10,000, 100,000; --quick: 10 and 10,000) the N services are
# programmed everywhere (a baseline that takes longer than 5 minutes records that and
# is not measured at that N), then each round measures every topology in turn with
# `porin-bench connect-client VIP:80` (nonblocking connects in flight, reset after the
# handshake). At the largest N, one update: the target service loses one of its four
# backends. Inputs come from lb_rules.py (see there for the rule structure).
# Run through scripts/bench, which builds and sets PORIN_BIN, PORIN_BENCH_BIN,
# BENCH_ROOT and BENCH_QUICK. Environment overrides: BENCH_LB_SIZES="10 1000",
# BENCH_LB_ROUNDS, BENCH_LB_SECONDS, BENCH_LB_THREADS, BENCH_LB_INFLIGHT,
# BENCH_LB_TOPOLOGIES="socket perpacket" (a subset; absent ones report null).
set -euo pipefail
tool=$PORIN_BENCH_BIN
here=$(cd "$(dirname "$0")" && pwd)
rules="python3 $here/lb_rules.py"

if [[ "$BENCH_QUICK" == 1 ]]; then
    sizes=${BENCH_LB_SIZES:-10 10000} rounds=${BENCH_LB_ROUNDS:-2} conn_s=${BENCH_LB_SECONDS:-3}
else
    sizes=${BENCH_LB_SIZES:-10 1000 10000 100000} rounds=${BENCH_LB_ROUNDS:-3} conn_s=${BENCH_LB_SECONDS:-5}
fi
read -r -a sizes <<<"$sizes"
threads=${BENCH_LB_THREADS:-2}
inflight=${BENCH_LB_INFLIGHT:-16}
program_timeout=300
backends=4
conn_port=7000
svc_port=80
read -r -a topologies <<<"${BENCH_LB_TOPOLOGIES:-socket perpacket iptables nftables}"

bench_name=lb
# shellcheck source=lib/sandboxes.sh
source "$here/lib/sandboxes.sh"
: >"$samples"

is_porin() { [[ $1 == socket || $1 == perpacket || $1 == maglev ]]; }
node_netns() {  # node_netns TOPOLOGY NODE: the node's netns path
    python3 -c '
import json, sys
for n in json.load(open(sys.argv[1]))["nodes"]:
    if n["name"] == sys.argv[2]:
        print("/run/netns/" + n["netns"])' "$work/$1/state.json" "$2"
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
sample() { echo "$*" >>"$samples"; }  # sample N TOPOLOGY METRIC VALUE

# --- sandboxes --------------------------------------------------------------------
pods=$work/pods.yaml
{
    printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench\n'
    for i in $(seq $backends); do
        printf -- '---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: server-%d\n  namespace: bench\n  labels:\n    app: bench-server\nspec:\n  nodeName: node-1\n  containers:\n    - name: server\n      image: porin/bench\n      command: ["sleep", "infinity"]\n' "$i"
    done
    printf -- '---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: client\n  namespace: bench\n  labels:\n    app: bench-client\nspec:\n  nodeName: node-2\n  containers:\n    - name: client\n      image: porin/bench\n      command: ["sleep", "infinity"]\n'
} >"$pods"
printf '[plugins.lb]\nenabled = true\n' >"$work/socket.toml"
printf '[plugins.lb]\nenabled = true\nsocket_lb = false\n' >"$work/perpacket.toml"
printf '[plugins.lb]\nenabled = true\nalgorithm = "maglev"\n' >"$work/maglev.toml"

log "== lb: N = ${sizes[*]} services x $backends backends, $rounds rounds of ${conn_s}s per topology"
log "   connect-client: $threads threads x $inflight connects in flight; program timeout ${program_timeout}s"
log "== sandboxes (state in $work)"
declare -A servers manifests
for topology in "${topologies[@]}"; do
    manifests[$topology]=$work/manifests-$topology
    mkdir -p "${manifests[$topology]}"
    cp "$pods" "${manifests[$topology]}/pods.yaml"
    if is_porin "$topology"; then
        sbx "$topology" up --agent-config "$work/$topology.toml" "${manifests[$topology]}" >&2
    else
        sbx "$topology" up --plain "${manifests[$topology]}" >&2
    fi
    list=()
    for i in $(seq $backends); do
        ip=$(ip_of "$topology" "bench/server-$i")
        [[ -n $ip ]] || { log "no address for bench/server-$i in $topology"; exit 1; }
        list+=("$ip")
        sbx "$topology" exec "bench/server-$i" -- "$tool" accept-server $conn_port \
            >"$work/server-$topology-$i.log" 2>&1 &
    done
    servers[$topology]="${list[*]}"
done

probe() {  # probe TOPOLOGY ADDR: one TCP connect with a short timeout
    sbx "$1" exec bench/client -- python3 -c '
import socket, sys
socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.2).close()' "$2" "$svc_port" \
        >/dev/null 2>&1
}
wait_vip() {  # wait_vip TOPOLOGY VIP SECONDS: until the service answers bench/client
    local deadline=$((SECONDS + $3))
    until probe "$1" "$2"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.05
    done
}
# maglev_memory TOPOLOGY: "TABLES BYTES" per node: the Maglev tables' inner maps (named
# porin_maglev_in) and their memlock, over the node's agents.
maglev_memory() {
    local nodes
    nodes=$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["nodes"]))' \
        "$work/$1/state.json")
    bpftool map show -j | python3 -c '
import json, sys
maps = [m for m in json.load(sys.stdin) if m.get("name") == "porin_maglev_in"]
nodes = int(sys.argv[1])
print(len(maps) // nodes, sum(m.get("bytes_memlock", 0) for m in maps) // nodes)' "$nodes"
}
# The "services programmed" lines the lb plugin of node-2 (the client's node) logged.
programmed_lines() { grep -a 'services programmed' "$work/$1/logs/agent_node-2.log" 2>/dev/null || true; }
field() { sed -n "s/.*[ \"]$1=\([0-9.]*\).*/\1/p"; }  # field NAME < log line

# load_rules TOPOLOGY FILE [--noflush]: kube-proxy's rules into node-2's namespace (the
# client's node: PREROUTING sees the pod's packets), within the time limit.
load_rules() {
    local netns
    netns=$(node_netns "$1" node-2)
    if [[ $1 == iptables ]]; then
        timeout "$program_timeout" nsenter --net="$netns" iptables-restore ${3:-} <"$2"
    else
        timeout "$program_timeout" nsenter --net="$netns" nft -f "$2"
    fi
}

declare -A skipped
program() {  # program TOPOLOGY N: prints seconds, or "timeout"
    local topology=$1 n=$2 t0 dir
    read -r -a eps <<<"${servers[$topology]}"
    case $topology in
        socket | perpacket | maglev)
            dir=${manifests[$topology]}
            $rules services "$n" >"$work/services.$topology.yaml"
            $rules target "$n" "${eps[@]}" >"$work/target.$topology.yaml"
            t0=$(now)
            mv "$work/services.$topology.yaml" "$dir/services.yaml"
            mv "$work/target.$topology.yaml" "$dir/target.yaml"
            if ! wait_vip "$topology" "$($rules vip "$n")" "$program_timeout"; then
                echo timeout
                return
            fi
            since "$t0"
            ;;
        iptables | nftables)
            $rules "$topology" "$n" "${eps[@]}" >"$work/$topology.rules"
            t0=$(now)
            if ! load_rules "$topology" "$work/$topology.rules"; then
                echo timeout
                return
            fi
            since "$t0"
            ;;
    esac
}

measure() {  # measure N TOPOLOGY ROUND
    local out=$work/conn-$2-$1-$3.json vip
    vip=$($rules vip "$1")
    sbx "$2" exec bench/client -- "$tool" connect-client "$vip:$svc_port" \
        --seconds "$conn_s" --threads "$threads" --inflight "$inflight" >"$out"
    python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(r["conn_per_s"], r["p50_us"], r["p99_us"], r["errors"])' "$out"
}

for n in "${sizes[@]}"; do
    log "== N = $n"
    for topology in "${topologies[@]}"; do
        if [[ -n ${skipped[$topology]:-} ]]; then
            log "   $topology: skipped (timed out at a smaller N)"
            sample "$n $topology program_s timeout"
            continue
        fi
        secs=$(program "$topology" "$n")
        sample "$n $topology program_s $secs"
        if [[ $secs == timeout ]]; then
            log "   $topology: not programmed within ${program_timeout}s"
            skipped[$topology]=1
            continue
        fi
        if is_porin "$topology"; then
            line=$(programmed_lines "$topology" | awk -v n="$n" '/frontends=/ { l = $0 } END { print l }')
            agent_ms=$(field total_ms <<<"$line")
            log "   $topology: target answers ${secs}s after the files moved in; agent programmed in ${agent_ms:-?} ms" \
                "(computing $(field desired_ms <<<"$line") ms, writing $(field write_ms <<<"$line") ms," \
                "$(field writes <<<"$line") map elements; CPU $(field cpu_ms <<<"$line") ms)"
            sample "$n $topology agent_program_ms ${agent_ms:-nan}"
            cpu_ms=$(field cpu_ms <<<"$line")
            sample "$n $topology agent_program_cpu_ms ${cpu_ms:-nan}"
            if [[ $topology == maglev ]]; then
                read -r tables bytes < <(maglev_memory "$topology")
                log "   maglev: $tables tables per node, $bytes bytes of kernel memory per node"
                sample "$n $topology maglev_tables $tables"
                sample "$n $topology maglev_bytes $bytes"
            fi
        else
            log "   $topology: programmed in ${secs}s"
        fi
        if ! wait_vip "$topology" "$($rules vip "$n")" 60; then
            log "$topology: bench/client cannot reach the target at N = $n"
            exit 1
        fi
    done
    for ((round = 1; round <= rounds; round++)); do
        for topology in "${topologies[@]}"; do
            [[ -z ${skipped[$topology]:-} ]] || continue
            read -r cps p50 p99 errors < <(measure "$n" "$topology" "$round")
            sample "$n $topology conn_per_s $cps"
            sample "$n $topology p50_us $p50"
            sample "$n $topology p99_us $p99"
            printf '   round %d/%d  %-9s %9.0f conn/s  p50 %6d us  p99 %7d us  errors %d\n' \
                "$round" "$rounds" "$topology" "$cps" "$p50" "$p99" "$errors" >&2
        done
    done
done

# --- one update at the largest N: the target loses its last backend ---------------
n=${sizes[-1]}
log "== update at N = $n: bench/target loses one of its $backends backends"
for topology in "${topologies[@]}"; do
    if [[ -n ${skipped[$topology]:-} ]]; then
        sample "$n $topology update_ms timeout"
        continue
    fi
    read -r -a eps <<<"${servers[$topology]}"
    removed=${eps[-1]}
    kept=("${eps[@]:0:${#eps[@]}-1}")
    case $topology in
        socket | perpacket | maglev)
            before=$(programmed_lines "$topology" | wc -l)
            $rules target "$n" "${kept[@]}" >"$work/target.$topology.yaml"
            mv "$work/target.$topology.yaml" "${manifests[$topology]}/target.yaml"
            deadline=$((SECONDS + 60))
            until (($(programmed_lines "$topology" | wc -l) > before)); do
                ((SECONDS < deadline)) || { log "$topology: the update was not programmed in 60s"; exit 1; }
                sleep 0.05
            done
            line=$(programmed_lines "$topology" | tail -1)
            ms=$(field total_ms <<<"$line")
            log "   $topology: agent programmed the update in $ms ms (writes: $(field writes <<<"$line"))"
            ;;
        iptables | nftables)
            $rules "$topology-update" "$n" "$removed" "${kept[@]}" >"$work/update.rules"
            t0=$(now)
            load_rules "$topology" "$work/update.rules" --noflush || {
                sample "$n $topology update_ms timeout"
                continue
            }
            ms=$(awk -v s="$(since "$t0")" 'BEGIN { printf "%.1f", s * 1000 }')
            log "   $topology: update (kube-proxy's partial sync / transaction) in $ms ms"
            ;;
    esac
    sample "$n $topology update_ms $ms"
done

duration=$((SECONDS - started))
line=$(python3 "$here/lb_report.py" "$samples" --quick "$BENCH_QUICK" --duration "$duration" \
    --rounds "$rounds" --seconds "$conn_s" --threads "$threads" --inflight "$inflight")
finish
log "== done in ${duration}s (sandboxes are removed on exit)"
echo "$line"
