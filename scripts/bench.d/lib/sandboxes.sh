# Shared by the benchmarks that compare sandboxes up side by side (sourced, not run).
# Before sourcing set `bench_name` and the array `topologies`; afterwards there are:
#   $work, $samples, $started   the run's directory (/tmp/porin-bench-NAME.*), its
#                               samples file and the start time
#   log MSG...                  progress on stderr
#   sbx TOPOLOGY ARGS...        `porin sandbox ARGS` on that topology's sandbox
#   ip_of TOPOLOGY POD          a pod's address (`porin sandbox status`)
#   median < NUMBERS            the median of one number per line
#   start_servers TOPOLOGY IPERF_PORT CONN_PORT   iperf3 -s and porin-bench conn-server
#                               in bench/server; its address goes to ${server[TOPOLOGY]}
#   wait_reachable TOPOLOGY ADDR:PORT   until bench/client connects (60 s at most)
#   iperf_gbps TOPOLOGY ROUND ADDR PORT SECONDS   one iperf3 TCP stream from
#                               bench/client; prints Gbit/s received
#   conn_rate TOPOLOGY ROUND ADDR:PORT   porin-bench conn-client from bench/client for
#                               $conn_s seconds, $conn_concurrency at once; prints conn/s
#   finish                      marks the run good: $work is removed on exit
# On exit every topology's sandbox is brought down; $work is kept (and named) unless
# `finish` was called, so a failed run leaves its logs.
started=$SECONDS
work=$(mktemp -d "/tmp/porin-bench-$bench_name.XXXXXX")
samples=$work/samples.txt
bench_ok=0

log() { echo "$*" >&2; }
sbx() {
    local topology=$1
    shift
    PORIN_SANDBOX_DIR=$work/$topology "$PORIN_BIN" sandbox "$@"
}
bench_cleanup() {
    local topology
    for topology in "${topologies[@]}"; do
        [[ -e $work/$topology/state.json ]] && { sbx "$topology" down >&2 || true; }
    done
    if [[ $bench_ok == 1 ]]; then
        rm -rf "$work"
    else
        log "bench $bench_name failed; logs and results kept in $work"
    fi
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM
finish() { bench_ok=1; }

ip_of() {
    sbx "$1" status | awk -v pod="$2" '$1 == pod { print $3 }'
}
declare -A server
start_servers() {
    server[$1]=$(ip_of "$1" bench/server)
    [[ -n ${server[$1]} ]] || { log "no address for bench/server in $1"; return 1; }
    sbx "$1" exec bench/server -- iperf3 -s -p "$2" -D --logfile "$work/iperf3-server-$1.log"
    sbx "$1" exec bench/server -- "$PORIN_BENCH_BIN" conn-server "$3" \
        >"$work/conn-server-$1.log" 2>&1 &
}
median() {
    sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
# The agents route between nodes once they see each other's Node objects (and a
# tunnel once both published keys), and servers take a moment to start.
wait_reachable() {
    local deadline=$((SECONDS + 60))
    until sbx "$1" exec bench/client -- "$PORIN_BENCH_BIN" conn-client "$2" \
        --seconds 0.5 --concurrency 1 >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            log "$1: bench/client cannot reach $2 after 60s"
            return 1
        fi
        sleep 0.5
    done
    log "   $1: bench/client -> $2 reachable"
}
iperf_gbps() {
    local out=$work/iperf-$1-$2.json
    sbx "$1" exec bench/client -- iperf3 -c "$3" -p "$4" -t "$5" -O 1 -J >"$out" || true
    "$PORIN_BENCH_BIN" iperf-bps "$out" | awk '{ printf "%.4f\n", $1 / 1e9 }'
}
conn_rate() {
    local out=$work/conn-$1-$2.json
    sbx "$1" exec bench/client -- "$PORIN_BENCH_BIN" conn-client "$3" \
        --seconds "$conn_s" --concurrency "$conn_concurrency" >"$out"
    sed -n 's/.*"conn_per_s":\([0-9.eE+-]*\).*/\1/p' "$out"
}
