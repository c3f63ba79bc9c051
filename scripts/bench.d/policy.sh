#!/usr/bin/env bash
# scripts/bench policy: what 1,000 rules over 10,000 identities cost.
#
# Computation (porin-policy-bench, pure, no privileges): a synthetic cluster of 10,000
# identities in 50 namespaces, 100 local endpoints, 1,000 rules mixing label selectors,
# other namespaces, namespace labels (CCNP), entities, CIDRs with except, deny rules and
# port ranges (CNP, CCNP, NetworkPolicy). Reported: the full computation of the policy
# maps, one new identity, one new rule, one new local endpoint and one removed rule
# applied incrementally (and checked equal to a full recomputation), map entries per
# endpoint, and resident memory.
#
# Datapath: two sandboxes up at once, bench/server on node-1 and bench/client on node-2,
# both with `[plugins.policy] enabled = true`:
#   rules: 1,000 CiliumNetworkPolicies selecting bench/server (label selectors of other
#          apps, other namespaces, entities, CIDRs with except, port ranges, deny rules)
#          plus the one that allows bench/client to port 7000;
#   none:  no policy at all.
# Each round measures none then rules with `porin-bench conn-client SERVER:7000` (a new
# connection each time, so every one goes through the policy lookup); the ratio of the
# medians is ratio_conn_rate. One JSON line holds both halves.
# Run through scripts/bench, which builds and sets PORIN_BIN, PORIN_BENCH_BIN,
# BENCH_ROOT and BENCH_QUICK.
set -euo pipefail
tool=$PORIN_BENCH_BIN
policy_tool=$(dirname "$PORIN_BIN")/porin-policy-bench
manifests=$BENCH_ROOT/bench/datapath

if [[ "$BENCH_QUICK" == 1 ]]; then
    rounds=3 conn_s=4
else
    rounds=5 conn_s=8
fi
rules=${BENCH_POLICY_RULES:-1000}
identities=${BENCH_POLICY_IDENTITIES:-10000}
conn_concurrency=${BENCH_CONN_CONCURRENCY:-8}
conn_port=7000
topologies=(none rules)

bench_name=policy
# shellcheck source=lib/sandboxes.sh
source "$(dirname "$0")/lib/sandboxes.sh"

log "== build porin-policy-bench (release)"
# With the packages scripts/bench built, so features unify the same way and only the
# binary is new.
(cd "$BENCH_ROOT" && ${CARGO:-cargo} build --release --locked -p porin -p porin-testbed \
    -p porin-policy --bin porin --bin porin-bench --bin porin-policy-bench) >&2

log "== computation: $identities identities, $rules rules, 100 local endpoints"
compute=$("$policy_tool" --identities "$identities" --rules "$rules")
log "   $compute"

# --- datapath: manifests -------------------------------------------------------------
for topology in "${topologies[@]}"; do
    mkdir -p "$work/manifests-$topology"
    cp "$manifests/pods.yaml" "$work/manifests-$topology/pods.yaml"
done
python3 - "$rules" "$conn_port" >"$work/manifests-rules/policies.yaml" <<'PY'
import sys
n, port = int(sys.argv[1]), int(sys.argv[2])
head = ("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: r%d, namespace: bench}\n"
        "spec:\n  endpointSelector: {matchLabels: {app: bench-server}}\n")
bodies = [
    "  ingress:\n    - fromEndpoints: [{matchLabels: {app: other-%(i)d}}]\n"
    "      toPorts: [{ports: [{port: \"%(p)d\", protocol: TCP}]}]\n",
    "  ingress:\n    - fromEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: ns-%(i)d}}]\n"
    "      toPorts: [{ports: [{port: \"8000\", endPort: 8007, protocol: TCP}]}]\n",
    "  ingress:\n    - fromEntities: [cluster]\n      toPorts: [{ports: [{port: \"%(p)d\", protocol: UDP}]}]\n",
    "  ingress:\n    - fromCIDRSet: [{cidr: 10.%(a)d.%(b)d.0/24, except: [10.%(a)d.%(b)d.128/25]}]\n",
    "  ingressDeny:\n    - fromEndpoints: [{matchLabels: {app: blocked-%(i)d}}]\n"
    "      toPorts: [{ports: [{port: \"22\", protocol: TCP}]}]\n",
]
out = []
for i in range(n - 1):
    out.append(head % i + bodies[i % len(bodies)] % {"i": i, "p": 1024 + i % 4000, "a": 100 + i // 250, "b": i % 250})
out.append(head % (n - 1) + "  ingress:\n    - fromEndpoints: [{matchLabels: {app: bench-client}}]\n"
           "      toPorts: [{ports: [{port: \"%d\", protocol: TCP}]}]\n" % port)
sys.stdout.write("---\n".join(out))
PY
printf '[plugins.policy]\nenabled = true\n' >"$work/agent.toml"

log "== datapath: $rounds rounds, connections ${conn_s}s x $conn_concurrency threads"
log "== sandboxes (state in $work)"
declare -A server
for topology in "${topologies[@]}"; do
    sbx "$topology" up --agent-config "$work/agent.toml" "$work/manifests-$topology" >&2
    server[$topology]=$(ip_of "$topology" bench/server)
    [[ -n ${server[$topology]} ]] || { log "no address for bench/server in $topology"; exit 1; }
    sbx "$topology" exec bench/server -- "$tool" conn-server $conn_port \
        >"$work/conn-server-$topology.log" 2>&1 &
done

for topology in "${topologies[@]}"; do
    wait_reachable "$topology" "${server[$topology]}:$conn_port"
done
# The rules are in force: a port no rule allows is dropped at the server.
if sbx rules exec bench/client -- curl -s -o /dev/null --connect-timeout 1 \
    "http://${server[rules]}:7001/" 2>/dev/null; then
    log "rules: port 7001 answered; the policy is not in force"
    exit 1
fi

log "== measuring (none, rules alternating)"
for ((round = 1; round <= rounds; round++)); do
    for topology in "${topologies[@]}"; do
        cps=$(conn_rate "$topology" "$round" "${server[$topology]}:$conn_port")
        echo "$topology conn_per_s $cps" >>"$samples"
        printf '   round %d/%d  %-5s  %9.0f conn/s\n' "$round" "$rounds" "$topology" "$cps" >&2
    done
done

duration=$((SECONDS - started))
sets=()
for key in identities rules local_endpoints cidr_identities parse_ms full_compute_ms \
    incremental_identity_ms incremental_rule_ms incremental_endpoint_ms \
    incremental_remove_rule_ms incremental_remove_busy_rule_ms entries_total entries_per_endpoint \
    entries_per_endpoint_max rss_mb compute_rss_delta_mb incremental_matches_full; do
    value=$(python3 -c 'import json, sys; print(json.dumps(json.loads(sys.argv[1])[sys.argv[2]]))' "$compute" "$key")
    sets+=(--set "$key=$value")
done
line=$("$tool" summarize "$samples" --bench policy --compare rules,none \
    --ratio conn_rate=conn_per_s "${sets[@]}" \
    --set datapath_rules="$rules" --set runs="$rounds" --set duration_s="$duration" \
    --set conn_s="$conn_s" --set conn_concurrency="$conn_concurrency" \
    --set quick="$([[ $BENCH_QUICK == 1 ]] && echo true || echo false)")
finish
log "== done in ${duration}s (sandboxes are removed on exit)"
echo "$line"
