#!/usr/bin/env bash
# The README's first command: a two-node sandbox with the quickstart workloads,
# real traffic between them, and the flows Porin saw.
#   scripts/demo.sh PORIN_BINARY MANIFEST_DIR [--keep]
set -euo pipefail
porin=$1
dir=$2
keep=${3:-}

if [[ $EUID -ne 0 ]]; then
    echo "demo: the sandbox makes network namespaces and loads eBPF programs: run as root (sudo make demo)" >&2
    exit 1
fi

started=$(date +%s)
"$porin" sandbox down >/dev/null 2>&1 || true
cleanup() { [[ "$keep" == "--keep" ]] || "$porin" sandbox down; }
trap cleanup EXIT

echo "== sandbox up: $dir"
"$porin" sandbox up "$dir"
"$porin" status --wait --timeout 60 >/dev/null
"$porin" status

ip_of() {
    "$porin" endpoint list -o json | python3 -c '
import json, sys
want = sys.argv[1]
for e in json.load(sys.stdin):
    ep = e["endpoint"]
    if ep["namespace"] + "/" + ep["pod"] == want:
        print(ep["ipv4"]); break
' "$1"
}
admin=$(ip_of payments/payments-admin-api)
postgres=$(ip_of payments/postgres)
dns=$(ip_of kube-system/coredns)
api=$(ip_of payments/payments-api)

run() {  # run POD CMD...: show the command and its short result
    local pod=$1; shift
    printf '  %-24s %s\n' "$pod" "$*"
    if ! "$porin" sandbox exec "$pod" -- "$@" >/tmp/porin-demo-out 2>&1; then
        echo "    (failed: $(head -c 200 /tmp/porin-demo-out))"
    fi
}

echo
echo "== traffic"
run monitoring/prometheus curl -s -o /dev/null -m 3 "http://$admin:8080/"
run ops/ops-toolbox curl -s -o /dev/null -m 3 "http://$admin:8080/"
run payments/payments-api sh -c "nc -w 2 $postgres 5432 </dev/null"
run payments/payments-api dig +short +time=2 +tries=1 "@$dns" secretsmanager.us-east-1.amazonaws.com
run ops/ops-toolbox ping -c 2 -W 1 "$api"
# A truncated TCP header: the datapath drops it and says why.
run payments/payments-api python3 -c "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
s.sendto(b'\x30\x39\x15', ('$postgres', 0))"
sleep 1

echo
echo "== flows (porin observe --last 40)"
"$porin" observe --last 40

echo
echo "== summary"
"$porin" observe --last 1000 -o json | python3 -c '
import json, sys, collections
flows = [json.loads(l)["flow"] for l in sys.stdin if l.strip()]
verdicts = collections.Counter(f["verdict"] for f in flows)
pairs = collections.Counter(
    (f["source"].get("namespace", "?") + "/" + f["source"].get("pod_name", f["IP"]["source"]),
     f["destination"].get("namespace", "?") + "/" + f["destination"].get("pod_name", f["IP"]["destination"]))
    for f in flows)
print(f"  {len(flows)} flows: " + ", ".join(f"{v} {k}" for k, v in sorted(verdicts.items())))
for (s, d), n in pairs.most_common(8):
    print(f"  {n:4d}  {s} -> {d}")
'
echo "  demo took $(( $(date +%s) - started ))s"
[[ "$keep" == "--keep" ]] && echo "  sandbox kept: try 'porin observe -f', 'porin endpoint list'; remove it with 'porin sandbox down'"
exit 0
