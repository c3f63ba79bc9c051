#!/usr/bin/env bash
# Shared by the benchmarks in scripts/bench.d that compare sandboxes (sourced, not run):
# one work directory, one sandbox per topology in it, removed on exit (kept with the
# logs on failure). The sourcing script sets `bench` (its name) and `topologies`, and
# sets ok=1 when it succeeded.
work=$(mktemp -d "/tmp/porin-bench-$bench.XXXXXX")
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
        log "bench $bench failed; logs and results kept in $work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip_of() {  # ip_of TOPOLOGY POD
    sbx "$1" status | awk -v pod="$2" '$1 == pod { print $3 }'
}
wait_conn() {  # wait_conn TOPOLOGY ADDR:PORT: until bench/client connects (120 s at most)
    local deadline=$((SECONDS + 120))
    until sbx "$1" exec bench/client -- "$tool" conn-client "$2" --seconds 0.5 \
        --concurrency 1 >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            log "$1: bench/client cannot reach $2 after 120s"
            exit 1
        fi
        sleep 0.5
    done
    log "   $1: bench/client -> $2 reachable"
}
conn_rate() {  # conn_rate TOPOLOGY ROUND ADDR:PORT: prints connections/s
    local out=$work/conn-$1-$2.json
    sbx "$1" exec bench/client -- "$tool" conn-client "$3" \
        --seconds "$conn_s" --concurrency "$conn_concurrency" >"$out"
    sed -n 's/.*"conn_per_s":\([0-9.eE+-]*\).*/\1/p' "$out"
}
