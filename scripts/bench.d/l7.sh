#!/usr/bin/env bash
# scripts/bench l7: HTTP requests per second through the L7 proxy versus direct.
#
# One network namespace of its own (loopback only): porin-l7-bench's hyper
# server stands for payments-admin-api on 127.0.0.2:8080, and the proxy runs
# the seed article's admin-api-access with the client (127.0.0.1) resolved as
# monitoring, so every request is judged by the HTTP rule (GET /metrics) before
# it is forwarded over a pooled keep-alive connection. wrk (keep-alive, the
# same threads and connections) loads the server directly, then through the
# proxy (told the original destination explicitly), in the same run; rounds
# alternate and the medians are reported. Each round also loads socat relaying the
# bytes to the server (no HTTP, no policy): the floor any proxy on this path has.
# Proxy, relay and server are pinned to CPU 0, wrk to CPU 1 when the machine has two.
# Run through scripts/bench.
set -euo pipefail
root=$BENCH_ROOT
cargo=${CARGO:-cargo}
echo "== build porin-l7-bench (release)" >&2
# With the packages scripts/bench just built, so features unify and nothing rebuilds.
(cd "$root" && "$cargo" build --release --locked -p porin -p porin-testbed -p porin-policy \
    --bin porin-l7-bench) >&2
tool=$(dirname "$PORIN_BIN")/porin-l7-bench
command -v wrk >/dev/null || { echo "bench l7: wrk is required (make deps)" >&2; exit 1; }

if [[ "$BENCH_QUICK" == 1 ]]; then
    rounds=2 seconds=5
else
    rounds=5 seconds=10
fi
threads=${BENCH_L7_THREADS:-2}
connections=${BENCH_L7_CONNECTIONS:-32}
ns=porin-l7-bench-$$
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
inns() { ip netns exec "$ns" "$@"; }
cpus=$(nproc)
pin_server=() pin_wrk=()
if (( cpus >= 2 )); then pin_server=(taskset -c 0) pin_wrk=(taskset -c 1); fi

policy=$root/examples/policies/admin-api-access.yaml
# Not through inns: $! must be the server itself (ip netns exec and taskset exec it), so
# that cleanup kills it.
ip netns exec "$ns" "${pin_server[@]}" "$tool" server 127.0.0.2:8080 2>/dev/null &
pids+=($!)
ip netns exec "$ns" "${pin_server[@]}" "$tool" proxy 127.0.0.1:15080 127.0.0.2:8080 "$policy" \
    "127.0.0.1=k8s:app=prometheus,k8s:io.kubernetes.pod.namespace=monitoring" \
    "127.0.0.2=k8s:app=payments-admin-api,k8s:io.kubernetes.pod.namespace=payments" 2>/dev/null &
pids+=($!)
# The floor of any proxy here: socat relaying bytes (no HTTP parsing, no policy) from
# 127.0.0.1:15081 to the server, on the proxy's CPU. A forked socat per connection.
ip netns exec "$ns" "${pin_server[@]}" socat \
    TCP-LISTEN:15081,bind=127.0.0.1,fork,reuseaddr TCP:127.0.0.2:8080 2>/dev/null &
pids+=($!)
for _ in $(seq 50); do
    if inns curl -s -o /dev/null http://127.0.0.1:15080/metrics &&
        inns curl -s -o /dev/null http://127.0.0.2:8080/metrics &&
        inns curl -s -o /dev/null http://127.0.0.1:15081/metrics; then break; fi
    sleep 0.1
done
code=$(inns curl -s -o /dev/null -w '%{http_code}' -X POST http://127.0.0.1:15080/metrics)
[[ "$code" == 403 ]] || { echo "bench l7: POST through the proxy answered $code, not 403" >&2; exit 1; }

# wrk --latency: requests/s and the 99th percentile in ms.
run_wrk() {
    inns "${pin_wrk[@]}" wrk -t"$threads" -c"$connections" -d"${seconds}s" --latency "$1" |
        python3 -c '
import re, sys
text = sys.stdin.read()
rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", text).group(1))
m = re.search(r"^\s+99%\s+([0-9.]+)(us|ms|s)\s*$", text, re.M)
scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
if errors:
    sys.exit("wrk: %s non-2xx responses" % errors.group(1))
print(rps, float(m.group(1)) * scale)
'
}
direct_rps=() proxy_rps=() direct_p99=() proxy_p99=() relay_rps=()
for r in $(seq "$rounds"); do
    read -r rps p99 < <(run_wrk http://127.0.0.2:8080/metrics)
    direct_rps+=("$rps") direct_p99+=("$p99")
    echo "round $r direct: $rps req/s, p99 $p99 ms" >&2
    read -r rps p99 < <(run_wrk http://127.0.0.1:15080/metrics)
    proxy_rps+=("$rps") proxy_p99+=("$p99")
    echo "round $r proxy:  $rps req/s, p99 $p99 ms" >&2
    read -r rps p99 < <(run_wrk http://127.0.0.1:15081/metrics)
    relay_rps+=("$rps")
    echo "round $r relay:  $rps req/s, p99 $p99 ms (socat)" >&2
done
python3 - "${direct_rps[*]}" "${proxy_rps[*]}" "${direct_p99[*]}" "${proxy_p99[*]}" \
    "$threads" "$connections" "$seconds" "$rounds" "${relay_rps[*]}" <<'PY'
import json, statistics, sys
num = lambda s: [float(x) for x in s.split()]
d, p, dl, pl = (statistics.median(num(a)) for a in sys.argv[1:5])
relay = statistics.median(num(sys.argv[9]))
print(json.dumps({
    "bench": "l7",
    "threads": int(sys.argv[5]),
    "connections": int(sys.argv[6]),
    "seconds": int(sys.argv[7]),
    "rounds": int(sys.argv[8]),
    "direct_rps": round(d),
    "proxy_rps": round(p),
    "ratio_vs_direct": round(p / d, 3),
    "direct_p99_ms": round(dl, 3),
    "proxy_p99_ms": round(pl, 3),
    "added_p99_ms": round(pl - dl, 3),
    "relay_rps": round(relay),
    "relay_ratio_vs_direct": round(relay / d, 3),
    "ratio_vs_relay": round(p / relay, 3),
}))
PY
