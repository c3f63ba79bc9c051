#!/usr/bin/env bash
# scripts/bench flows: the observe plugin's flow pipeline (issue 5).
#
# `porin-flows-bench` feeds synthetic ring-buffer records, laid out exactly as the
# pod programs write them, through core's decoder and the plugin's own pipeline,
# ring and Hubble API (no kernel, so the numbers are the agent's userspace cost):
#   rate             decode + enrich + store on one core (flows_per_s_per_core, what
#                    the agent does per event), and with the Hubble message built and a
#                    GetFlows filter evaluated on every flow (message_flows_per_s_per_core,
#                    what a reader of every flow adds);
#   stream           flows per second one GetFlows client receives over the unix socket;
#   sustained R S    R events/s for S seconds through the agent's event channel into
#                    run_pipeline with default settings (4096-flow ring) and one
#                    GetFlows --follow client: every loss the plugin counts, and RSS.
# The peer is Hubble's reported behaviour (cilium/cilium#34981: lost events at peaks of
# about 1,500 flows/s with default settings); Hubble cannot run here, so the JSON
# carries that figure and the ratio of the highest loss-free rate to it.
# Full mode also runs 10 minutes at 50k flows/s and reports the RSS growth.
# Run through scripts/bench, which builds and sets PORIN_FLOWS_BENCH_BIN, BENCH_QUICK.
set -euo pipefail
tool=$PORIN_FLOWS_BENCH_BIN

if [[ "$BENCH_QUICK" == 1 ]]; then
    events=1000000 stream_s=3 rate_s=5 rss_s=20
else
    events=5000000 stream_s=10 rate_s=30 rss_s=600
fi
hubble_loss_rate=1500

log() { echo "$*" >&2; }
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

log "== rate: $events events on one core"
rate=$("$tool" rate --events "$events")
log "$rate"
log "== stream: GetFlows over the unix socket for ${stream_s}s"
stream=$("$tool" stream --seconds "$stream_s")
log "$stream"
declare -A lost
best=0
for r in 10000 50000 100000; do
    log "== sustained: $r flows/s for ${rate_s}s"
    line=$("$tool" sustained "$r" "$rate_s")
    log "$line"
    lost[$r]=$(field "$line" lost)
    [[ ${lost[$r]} == 0 ]] && best=$r
done
log "== RSS: 50000 flows/s for ${rss_s}s"
rss=$("$tool" sustained 50000 "$rss_s")
log "$rss"

python3 - "$rate" "$stream" "$rss" "${lost[10000]}" "${lost[50000]}" "${lost[100000]}" \
    "$best" "$hubble_loss_rate" "$BENCH_QUICK" <<'PY'
import json, sys
rate, stream, rss = (json.loads(a) for a in sys.argv[1:4])
l10, l50, l100, best, hubble, quick = (int(a) for a in sys.argv[4:10])
print(json.dumps({
    "bench": "flows",
    "quick": bool(quick),
    "flows_per_s_per_core": rate["flows_per_s_per_core"],
    "message_flows_per_s_per_core": rate["message_flows_per_s_per_core"],
    "grpc_stream_flows_per_s": stream["grpc_stream_flows_per_s"],
    "lost_at_10k": l10,
    "lost_at_50k": l50,
    "lost_at_100k": l100,
    "rss_seconds": rss["seconds"],
    "rss_growth_pct": rss["rss_growth_pct"],
    "rss_lost": rss["lost"],
    "hubble_reported_loss_flows_per_s": hubble,
    "ratio_lossless_rate_vs_hubble": round(best / hubble, 1),
}))
PY
