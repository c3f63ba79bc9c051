#!/usr/bin/env bash
# scripts/bench dns: what the node's transparent DNS proxy (issue 7, docs/fqdn.md) costs.
#
# One sandbox with real agents: dnsmasq as cluster DNS (kube-system/kube-dns on node-1,
# answering every name under bench.example from memory) and two clients on node-2:
#   bench/direct   no policy: its queries go straight to dnsmasq
#   bench/proxied  a CiliumNetworkPolicy with DNS rules (`matchPattern: "*"`): the pod
#                  program redirects its queries to node-2's DNS proxy, which checks
#                  each name, forwards it to dnsmasq and parses the answer
# Each round runs dnsperf (Debian's) from both, alternating: flat out (queries/s), then
# paced at 10,000 queries/s with every response's latency (-v) for p50/p99. The JSON
# line has the medians over rounds; added_* is proxied minus direct. During the proxied
# client's flat-out runs the CPU time of node-2's `porin-dns` threads (the proxy's own
# runtime) is read from /proc: proxy_qps_per_core is queries answered per CPU second,
# which a loaded machine or a slow upstream does not cap. During the proxied client's paced
# runs the whole agent's CPU time gives proxy_agent_cpu_us_per_query (proxy, L7 records and
# flow pipeline together).
# Run through scripts/bench (PORIN_BIN, BENCH_ROOT, BENCH_QUICK).
set -euo pipefail
if [[ "$BENCH_QUICK" == 1 ]]; then
    rounds=2 max_s=5 paced_s=4
else
    rounds=5 max_s=15 paced_s=10
fi
paced_qps=10000
topologies=(porin)
bench_name=dns
# shellcheck source=lib/sandboxes.sh
source "$(dirname "$0")/lib/sandboxes.sh"
command -v dnsperf >/dev/null || { log "dns: dnsperf is missing (make deps installs it)"; exit 1; }

manifests=$work/manifests
mkdir -p "$manifests"
cat >"$manifests/00-pods.yaml" <<'YAML'
apiVersion: v1
kind: Namespace
metadata: {name: kube-system}
---
apiVersion: v1
kind: Namespace
metadata: {name: bench}
---
apiVersion: v1
kind: Pod
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  nodeName: node-1
  containers:
    - name: dnsmasq
      image: ignored
      command: ["dnsmasq", "-k", "--user=root", "--pid-file", "--no-resolv", "--no-hosts",
                "--address=/bench.example/10.77.0.1", "--dns-forward-max=1000"]
---
apiVersion: v1
kind: Pod
metadata:
  name: direct
  namespace: bench
  labels: {app: direct}
spec:
  nodeName: node-2
  containers: [{name: c, image: ignored, command: ["sleep", "infinity"]}]
---
apiVersion: v1
kind: Pod
metadata:
  name: proxied
  namespace: bench
  labels: {app: proxied}
spec:
  nodeName: node-2
  containers: [{name: c, image: ignored, command: ["sleep", "infinity"]}]
YAML
cat >"$manifests/10-dns-policy.yaml" <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: proxied-dns
  namespace: bench
spec:
  endpointSelector:
    matchLabels: {app: proxied}
  egress:
    - toEndpoints:
        - matchLabels:
            io.kubernetes.pod.namespace: kube-system
            k8s-app: kube-dns
      toPorts:
        - ports: [{port: "53", protocol: ANY}]
          rules:
            dns:
              - matchPattern: "*"
YAML
queries=$work/queries.txt
for i in $(seq 1 1000); do echo "n$i.bench.example A"; done >"$queries"

log "== dns: $rounds rounds, flat out ${max_s}s, paced ${paced_s}s at $paced_qps q/s"
printf '[plugins.policy]\nenabled = true\n' >"$work/agent.toml"
sbx porin up --agent-config "$work/agent.toml" "$manifests" >&2
dns=$(ip_of porin kube-system/kube-dns)
[[ -n $dns ]] || { log "no address for kube-dns"; exit 1; }
for pod in direct proxied; do
    deadline=$((SECONDS + 60))
    until sbx porin exec "bench/$pod" -- dig +short +time=1 +tries=1 "@$dns" ready.bench.example |
        grep -q 10.77.0.1; do
        ((SECONDS < deadline)) || { log "bench/$pod cannot resolve through $dns"; exit 1; }
        sleep 0.5
    done
    log "   bench/$pod resolves through $dns"
done

agent_pid=$(python3 -c '
import json, sys
state = json.load(open(sys.argv[1]))
print(next(n["agent_pid"] for n in state["nodes"] if n["name"] == "node-2"))' "$work/porin/state.json")
dns_cpu_ticks() {  # CPU ticks (user + system) of node-2's porin-dns threads
    local t total=0
    for t in /proc/"$agent_pid"/task/*; do
        [[ $(cat "$t/comm" 2>/dev/null) == porin-dns ]] || continue
        total=$((total + $(awk '{ print $14 + $15 }' "$t/stat")))
    done
    echo "$total"
}
agent_cpu_ticks() {  # CPU ticks (user + system) of node-2's whole agent process
    awk '{ print $14 + $15 }' "/proc/$agent_pid/stat"
}
qps() {  # qps POD ROUND: queries per second flat out
    local out=$work/max-$1-$2.txt
    sbx porin exec "bench/$1" -- dnsperf -s "$dns" -d "$queries" -l "$max_s" -c 4 -q 200 \
        >"$out" 2>&1 || true
    awk '/Queries per second:/ { print $4 }' "$out"
}
latencies() {  # latencies POD ROUND: "p50_ms p99_ms lost" at the paced rate
    local out=$work/paced-$1-$2.txt
    sbx porin exec "bench/$1" -- dnsperf -s "$dns" -d "$queries" -l "$paced_s" -c 4 -q 200 \
        -Q "$paced_qps" -v >"$out" 2>&1 || true
    python3 - "$out" <<'PY'
import sys
lat = []
lost = 0
for line in open(sys.argv[1]):
    parts = line.split()
    if parts[:1] == [">"] and len(parts) >= 5:
        try:
            lat.append(float(parts[-1]) * 1000)
        except ValueError:
            pass
    if line.strip().startswith("Queries lost:"):
        lost = int(line.split()[2])
lat.sort()
if not lat:
    print("nan nan", lost)
else:
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print(f"{pick(0.50):.4f} {pick(0.99):.4f} {lost}")
PY
}

log "== measuring (direct, proxied alternating)"
for ((round = 1; round <= rounds; round++)); do
    for pod in direct proxied; do
        ticks_before=$(dns_cpu_ticks)
        q=$(qps "$pod" "$round")
        ticks=$(($(dns_cpu_ticks) - ticks_before))
        if [[ $pod == proxied ]]; then
            answered=$(awk '/Queries completed:/ { print $3 }' "$work/max-$pod-$round.txt")
            per_core=$(python3 -c "import sys; t = int(sys.argv[2]) / $(getconf CLK_TCK); print(round(int(sys.argv[1]) / t) if t else 0)" "${answered:-0}" "$ticks")
            echo "$pod qps_per_core $per_core" >>"$samples"
            log "   round $round/$rounds  proxy: ${answered:-0} queries in $ticks CPU ticks of porin-dns: $per_core queries per CPU second"
        fi
        agent_before=$(agent_cpu_ticks)
        read -r p50 p99 lost < <(latencies "$pod" "$round")
        if [[ $pod == proxied ]]; then
            # The agent's CPU per query at the paced rate (the proxy, its L7 records and the
            # flow pipeline): what the proxy costs the node, which a busy machine's
            # scheduling does not change much.
            completed=$(awk '/Queries completed:/ { print $3 }' "$work/paced-$pod-$round.txt")
            agent_us=$(python3 -c "import sys; q = int(sys.argv[2] or 0); print(round(int(sys.argv[1]) * 1e6 / $(getconf CLK_TCK) / q, 2) if q else 'nan')" "$(($(agent_cpu_ticks) - agent_before))" "${completed:-0}")
            echo "$pod agent_cpu_us_per_query $agent_us" >>"$samples"
        fi
        echo "$pod qps $q" >>"$samples"
        echo "$pod p50_ms $p50" >>"$samples"
        echo "$pod p99_ms $p99" >>"$samples"
        echo "$pod lost $lost" >>"$samples"
        printf '   round %d/%d  %-8s %9.0f q/s   at %d q/s: p50 %.3f ms  p99 %.3f ms  lost %s\n' \
            "$round" "$rounds" "$pod" "${q:-0}" "$paced_qps" "$p50" "$p99" "$lost" >&2
    done
done

# The proxied client's queries must have gone through node-2's proxy (its counter), the
# direct client's not: otherwise the comparison measures nothing.
sent=$(cat "$work"/max-proxied-*.txt "$work"/paced-proxied-*.txt | awk '/Queries sent:/ { s += $3 } END { print s + 0 }')
seen=$(PORIN_SANDBOX_DIR=$work/porin "$PORIN_BIN" policy get -o json | python3 -c '
import json, sys
nodes = json.load(sys.stdin)
print(sum(n.get("dns_proxy", {}).get("counters", {}).get("queries", 0) for n in nodes if n.get("node") == "node-2"))')
log "   proxied client sent $sent queries; node-2's DNS proxy saw $seen"
if ((seen < sent * 9 / 10)); then
    log "dns: the proxied client's queries did not go through the proxy ($seen of $sent)"
    exit 1
fi

duration=$((SECONDS - started))
line=$(python3 - "$samples" "$rounds" "$duration" "$paced_qps" "$BENCH_QUICK" "$sent" "$seen" <<'PY'
import json, statistics, sys
samples, rounds, duration, paced, quick = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
sent, seen = int(sys.argv[6]), int(sys.argv[7])
vals = {}
for line in open(samples):
    pod, key, value = line.split()
    try:
        vals.setdefault((pod, key), []).append(float(value))
    except ValueError:
        pass
med = lambda pod, key: statistics.median(vals.get((pod, key), [float("nan")]))
r = lambda x: round(x, 4)
out = {
    "bench": "dns",
    "direct_qps": round(med("direct", "qps")),
    "proxy_qps": round(med("proxied", "qps")),
    "proxy_qps_per_core": round(med("proxied", "qps_per_core")),
    "ratio_vs_direct": r(med("proxied", "qps") / med("direct", "qps")),
    "paced_qps": paced,
    "direct_p50_ms": r(med("direct", "p50_ms")),
    "proxy_p50_ms": r(med("proxied", "p50_ms")),
    "direct_p99_ms": r(med("direct", "p99_ms")),
    "proxy_p99_ms": r(med("proxied", "p99_ms")),
    "added_p50_ms": r(med("proxied", "p50_ms") - med("direct", "p50_ms")),
    "added_p99_ms": r(med("proxied", "p99_ms") - med("direct", "p99_ms")),
    "proxy_agent_cpu_us_per_query": r(med("proxied", "agent_cpu_us_per_query")),
    "proxy_lost": int(sum(vals.get(("proxied", "lost"), [0]))),
    "direct_lost": int(sum(vals.get(("direct", "lost"), [0]))),
    "proxied_sent": sent,
    "proxy_seen": seen,
    "runs": rounds,
    "duration_s": duration,
    "quick": quick,
}
print(json.dumps(out))
PY
)
finish
log "== done in ${duration}s (the sandbox is removed on exit)"
echo "$line"
