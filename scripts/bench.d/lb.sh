#!/usr/bin/env bash
# scripts/bench lb: connection rate to a ClusterIP while N services exist, Porin's
# socket LB against kube-proxy's iptables mode.
#
# Two sandboxes with the same pods (bench/server-1..4 on node-1, bench/client on
# node-2, all four servers running `porin-bench conn-server`) are up at once, each in
# its own state directory:
#   porin:    `porin sandbox up --agent-config` with `[plugins.lb] enabled = true`
#             (socket LB, the default). Once the agents are ready, a file with N
#             Services is moved into the manifest directory; porin_sync_s is the time
#             from then until the target VIP answers from the client pod.
#   iptables: `porin sandbox up --plain` (no agents, no eBPF) plus kube-proxy-style
#             nat rules (KUBE-SERVICES -> KUBE-SVC-* -> statistic -> KUBE-SEP-* DNAT)
#             for the same N services in node-2's namespace, loaded with one
#             iptables-restore (timed: iptables_sync_s); the target service is the last
#             rule of KUBE-SERVICES, kube-proxy's linear match at its worst.
# Every service selects the four server pods (4 backends, port 80 -> 7000); the target
# is bench/target, the last one generated. Each round measures iptables then porin
# with `porin-bench conn-client VIP:80`; medians end up in one JSON line.
# Run through scripts/bench, which builds and sets PORIN_BIN, PORIN_BENCH_BIN,
# BENCH_ROOT and BENCH_QUICK.
set -euo pipefail
porin=$PORIN_BIN
tool=$PORIN_BENCH_BIN

if [[ "$BENCH_QUICK" == 1 ]]; then
    services=${BENCH_LB_SERVICES:-1000} rounds=3 conn_s=4
else
    services=${BENCH_LB_SERVICES:-10000} rounds=5 conn_s=8
fi
conn_concurrency=${BENCH_CONN_CONCURRENCY:-8}
backends=4
conn_port=7000
svc_port=80
topologies=(iptables porin)

started=$SECONDS
work=$(mktemp -d /tmp/porin-bench-lb.XXXXXX)
samples=$work/samples.txt
ok=0

log() { echo "$*" >&2; }
sbx() {  # sbx TOPOLOGY ARGS...: `porin sandbox ARGS` on that topology's sandbox
    local topology=$1
    shift
    PORIN_SANDBOX_DIR=$work/$topology "$porin" sandbox "$@"
}
cleanup() {
    local topology
    for topology in "${topologies[@]}"; do
        [[ -e $work/$topology/state.json ]] && { sbx "$topology" down >&2 || true; }
    done
    if [[ $ok == 1 ]]; then
        rm -rf "$work"
    else
        log "bench lb failed; logs and results kept in $work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip_of() {  # ip_of TOPOLOGY POD
    sbx "$1" status | awk -v pod="$2" '$1 == pod { print $3 }'
}
node_netns() {  # node_netns TOPOLOGY NODE: the node's netns name under /run/netns
    python3 -c '
import json, sys
for n in json.load(open(sys.argv[1]))["nodes"]:
    if n["name"] == sys.argv[2]:
        print(n["netns"])' "$work/$1/state.json" "$2"
}
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# --- manifests: pods (both sandboxes), services (porin), rules (iptables) ----------
pods_dir=$work/manifests-pods
porin_dir=$work/manifests-porin
mkdir -p "$pods_dir" "$porin_dir"
{
    printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench\n'
    for i in $(seq $backends); do
        printf -- '---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: server-%d\n  namespace: bench\n  labels:\n    app: bench-server\nspec:\n  nodeName: node-1\n  containers:\n    - name: server\n      image: porin/bench\n      command: ["sleep", "infinity"]\n' "$i"
    done
    printf -- '---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: client\n  namespace: bench\n  labels:\n    app: bench-client\nspec:\n  nodeName: node-2\n  containers:\n    - name: client\n      image: porin/bench\n      command: ["sleep", "infinity"]\n'
} >"$pods_dir/pods.yaml"
cp "$pods_dir/pods.yaml" "$porin_dir/pods.yaml"
printf '[plugins.lb]\nenabled = true\n' >"$work/agent.toml"

# VIP of service i (0-based): 10.100.0.0/16 + i + 1; the target is the last one.
vip_of() { python3 -c 'import ipaddress, sys; print(ipaddress.IPv4Address("10.100.0.0") + int(sys.argv[1]) + 1)' "$1"; }
target_vip=$(vip_of $((services - 1)))

# services.yaml: N Services selecting the servers, written next to (not in) the
# manifest directory and moved in once the agents are ready.
python3 - "$services" "$svc_port" "$conn_port" >"$work/services.yaml" <<'EOF'
import ipaddress, sys
n, port, target_port = (int(a) for a in sys.argv[1:4])
base = ipaddress.IPv4Address("10.100.0.0")
out = []
for i in range(n):
    name = "target" if i == n - 1 else "svc-%d" % i
    out.append(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n  namespace: bench\n"
        "spec:\n  clusterIP: %s\n  selector:\n    app: bench-server\n"
        "  ports:\n    - port: %d\n      targetPort: %d\n" % (name, base + i + 1, port, target_port))
sys.stdout.write("---\n".join(out))
EOF

# rules.txt (iptables-restore --noflush input), once the server addresses are known.
write_rules() {  # write_rules SERVER_IP...
    python3 - "$services" "$svc_port" "$conn_port" "$@" >"$work/rules.txt" <<'EOF'
import hashlib, ipaddress, sys
n, port, target_port = (int(a) for a in sys.argv[1:4])
eps = sys.argv[4:]
base = ipaddress.IPv4Address("10.100.0.0")
def chain(prefix, key):  # kube-proxy: prefix + 16 chars of base32(sha256)
    import base64
    return prefix + base64.b32encode(hashlib.sha256(key.encode()).digest()).decode()[:16]
decl, rules = [":KUBE-SERVICES - [0:0]"], []
rules.append('-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES')
rules.append('-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES')
for i in range(n):
    name = "bench/" + ("target" if i == n - 1 else "svc-%d" % i)
    vip = base + i + 1
    svc = chain("KUBE-SVC-", name + ":tcp")
    decl.append(":%s - [0:0]" % svc)
    rules.append('-A KUBE-SERVICES -d %s/32 -p tcp -m comment --comment "%s cluster IP" '
                 '-m tcp --dport %d -j %s' % (vip, name, port, svc))
    for j, ep in enumerate(eps):
        sep = chain("KUBE-SEP-", name + ":tcp:" + ep)
        decl.append(":%s - [0:0]" % sep)
        left = len(eps) - j
        stat = "-m statistic --mode random --probability %.11f " % (1.0 / left) if left > 1 else ""
        rules.append('-A %s -m comment --comment "%s -> %s:%d" %s-j %s'
                     % (svc, name, ep, target_port, stat, sep))
        rules.append('-A %s -p tcp -m comment --comment "%s" -m tcp -j DNAT --to-destination %s:%d'
                     % (sep, name, ep, target_port))
print("*nat")
print("\n".join(decl))
print("\n".join(rules))
print("COMMIT")
EOF
}

log "== lb: $services services x $backends backends, $rounds rounds, connections ${conn_s}s x $conn_concurrency threads"
log "== sandboxes (state in $work)"
sbx iptables up --plain "$pods_dir" >&2
sbx porin up --agent-config "$work/agent.toml" "$porin_dir" >&2

declare -A vip
for topology in "${topologies[@]}"; do
    servers=()
    for i in $(seq $backends); do
        ip=$(ip_of "$topology" "bench/server-$i")
        [[ -n $ip ]] || { log "no address for bench/server-$i in $topology"; exit 1; }
        servers+=("$ip")
        sbx "$topology" exec "bench/server-$i" -- "$tool" conn-server $conn_port \
            >"$work/conn-server-$topology-$i.log" 2>&1 &
    done
    vip[$topology]=$target_vip
done

# A quick probe: one TCP connect with a short timeout (a VIP nobody serves yet may
# drop the SYN; conn-client's 2 s per-connection timeout would blur the sync time).
probe() {  # probe TOPOLOGY ADDR
    sbx "$1" exec bench/client -- python3 -c '
import socket, sys
socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.2).close()' "$2" "$svc_port" \
        >/dev/null 2>&1
}

# iptables: rules into node-2's namespace (the client's node: PREROUTING sees the
# pod's packets, OUTPUT the node's own), one iptables-restore, timed.
ipt_servers=()
for i in $(seq $backends); do ipt_servers+=("$(ip_of iptables "bench/server-$i")"); done
write_rules "${ipt_servers[@]}"
ns=$(node_netns iptables node-2)
[[ -n $ns && -e /run/netns/$ns ]] || { log "no netns for node-2 of the iptables sandbox"; exit 1; }
log "== iptables: $(grep -c '^-A' "$work/rules.txt") rules into netns $ns"
t0=$(date +%s.%N)
nsenter --net="/run/netns/$ns" iptables-restore --noflush <"$work/rules.txt"
t1=$(date +%s.%N)
iptables_sync_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
log "   iptables-restore: ${iptables_sync_s}s"

# porin: the agents are ready (sandbox up waited); move the services in and time
# until the target VIP answers.
deadline=$((SECONDS + 300))
t0=$(date +%s.%N)
mv "$work/services.yaml" "$porin_dir/services.yaml"
until probe porin "$target_vip"; do
    if ((SECONDS > deadline)); then
        log "porin: $target_vip:$svc_port not answering 300s after adding $services services"
        exit 1
    fi
    sleep 0.05
done
t1=$(date +%s.%N)
porin_sync_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
log "   porin: $services services programmed, target answers after ${porin_sync_s}s"

for topology in "${topologies[@]}"; do
    deadline=$((SECONDS + 60))
    until sbx "$topology" exec bench/client -- "$tool" conn-client \
        "${vip[$topology]}:$svc_port" --seconds 0.5 --concurrency 1 >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            log "$topology: bench/client cannot reach ${vip[$topology]}:$svc_port after 60s"
            exit 1
        fi
        sleep 0.5
    done
    log "   $topology: bench/client -> bench/target ${vip[$topology]}:$svc_port reachable"
done

conn_rate() {  # conn_rate TOPOLOGY ROUND: prints connections/s
    local out=$work/conn-$1-$2.json
    sbx "$1" exec bench/client -- "$tool" conn-client "${vip[$1]}:$svc_port" \
        --seconds "$conn_s" --concurrency "$conn_concurrency" >"$out"
    sed -n 's/.*"conn_per_s":\([0-9.eE+-]*\).*/\1/p' "$out"
}

log "== measuring (iptables, porin alternating)"
for ((round = 1; round <= rounds; round++)); do
    for topology in "${topologies[@]}"; do
        cps=$(conn_rate "$topology" "$round")
        echo "$topology $cps" >>"$samples"
        printf '   round %d/%d  %-8s  %9.0f conn/s\n' "$round" "$rounds" "$topology" "$cps" >&2
    done
done

porin_cps=$(awk '$1 == "porin" { print $2 }' "$samples" | median)
ipt_cps=$(awk '$1 == "iptables" { print $2 }' "$samples" | median)
duration=$((SECONDS - started))
line=$(awk -v n="$services" -v b="$backends" -v p="$porin_cps" -v i="$ipt_cps" \
    -v ps="$porin_sync_s" -v is="$iptables_sync_s" -v r="$rounds" -v d="$duration" \
    -v cs="$conn_s" -v cc="$conn_concurrency" -v q="$BENCH_QUICK" 'BEGIN {
    printf "{\"bench\":\"lb\",\"services\":%d,\"backends_per_service\":%d,", n, b
    printf "\"porin_conn_per_s\":%.0f,\"iptables_conn_per_s\":%.0f,\"ratio_vs_iptables\":%.2f,", p, i, (i > 0 ? p / i : 0)
    printf "\"porin_sync_s\":%s,\"iptables_sync_s\":%s,", ps, is
    printf "\"runs\":%d,\"duration_s\":%d,\"conn_s\":%s,\"conn_concurrency\":%d,\"quick\":%s}\n", r, d, cs, cc, (q == 1 ? "true" : "false")
}')
ok=1
log "== done in ${duration}s (sandboxes are removed on exit)"
echo "$line"
