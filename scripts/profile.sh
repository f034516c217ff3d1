#!/usr/bin/env bash
# A call-graph profile of the server under one benchmark figure, pinned placement: where dcr-proxy's CPU goes by
# component, its hottest frames with the call chains that reach them, and the inclusive cost of our own functions.
# It backs the "profile that bounds it" of each issue-16 figure; the benchmark's numbers come from benches/run.sh.
#
#   scripts/profile.sh a                                  (a) kept-alive pass-through, c=16 and c=64
#   scripts/profile.sh c                                  (c) registrations
#   BENCH_CASE="RSA-2048 TLS 1.2" scripts/profile.sh b    (b) one handshake case
#   BENCH_CASE="keep-alive" scripts/profile.sh c          (c) kept-alive registrations alone
#
# perf samples the server's core (cpu-clock: the VM has no hardware counters) with DWARF call graphs, so Rust and
# C frames unwind without frame pointers. Samples of nginx, which alternates with dcr-proxy on that core, are left
# out of the report. Output: target/profile/<figure>.txt (the report) and <figure>.data (for `perf report -i`).
# PROFILE_SECONDS sets each benchmark round's length (default 8), PROFILE_HZ the sampling rate (default 499).
set -euo pipefail
cd "$(dirname "$0")/.."

fig="${1:?usage: scripts/profile.sh a|b|c}"
case "$fig" in a | b | c) ;; *) echo "profile.sh: the figure is a, b or c" >&2; exit 2 ;; esac
command -v perf >/dev/null || { echo "profile.sh: perf is needed (apt-get install linux-perf)" >&2; exit 2; }
[[ "$(nproc)" -ge 2 ]] || { echo "profile.sh: pinned placement needs two cores" >&2; exit 2; }
if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light
fi

out=target/profile
mkdir -p "$out"
data="$out/$fig.data"
report="$out/$fig.txt"
server_cpu=1 # benches/proxy/servers.rs SERVER_CPU

# PROFILE_REPORT_ONLY=1 writes the report again from the data of the last run.
if [[ "${PROFILE_REPORT_ONLY:-0}" != 1 ]]; then
    cargo bench --bench proxy --no-run 2>&1 | tail -1
    BENCH_ONLY="$fig" BENCH_MODE=pinned BENCH_SECONDS="${PROFILE_SECONDS:-8}" \
        cargo bench --bench proxy >"$out/$fig.bench.log" 2>&1 &
    bench=$!
    # Sample the whole run: only the server under test runs on its core; nginx's share is filtered out below.
    perf record -q -C "$server_cpu" -F "${PROFILE_HZ:-499}" --call-graph dwarf,16384 -o "$data" -- \
        bash -c "while kill -0 $bench 2>/dev/null; do sleep 1; done" >/dev/null 2>&1
    wait "$bench" || { echo "profile.sh: the benchmark failed, see $out/$fig.bench.log" >&2; exit 1; }
fi

# The server's processes: the pids whose main thread is named dcr-proxy; a pid selects all its threads (dcr-worker-N,
# dcr-sqlite, jemalloc's background thread, tokio's). Not `--comms`: with a process that exec'd from the benchmark,
# perf report's comm filter dropped the main thread's samples (seen on 2026-12-02), and a comm such as
# tokio-rt-worker also names the generator's threads.
pids=$(perf report -i "$data" --no-children --sort pid --stdio -g none 2>/dev/null |
    awk '$1 ~ /%$/ && $2 ~ /^[0-9]+:dcr-proxy$/ {split($2, a, ":"); print a[1]}' | sort -u | paste -sd, -)
[[ -n "$pids" ]] || { echo "profile.sh: no dcr-proxy samples in $data" >&2; exit 1; }

{
    echo "# Profile of figure ($fig), pinned, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Server core $server_cpu, cpu-clock at ${PROFILE_HZ:-499} Hz, DWARF call graphs; dcr-proxy processes: $pids"
    echo "Percentages are of dcr-proxy's samples. Benchmark output: $out/$fig.bench.log"
    echo
    echo "## By thread"
    perf report -i "$data" --pid "$pids" --percentage relative --no-children --sort comm --stdio -g none \
        2>/dev/null | grep '%'
    echo
    echo "## By component (self time)"
    perf report -i "$data" --pid "$pids" --percentage relative --no-children --sort dso,sym --stdio -g none --percent-limit 0 \
        2>/dev/null | python3 scripts/profile_components.py
    echo
    echo "## Hottest frames (self time) and the chains that reach them"
    perf report -i "$data" --pid "$pids" --percentage relative --no-children --sort sym --stdio \
        -g caller,0.5,callee,function,percent --percent-limit 1.5 --max-stack 24 2>/dev/null |
        grep -v '^#' | grep -v '^$' | cut -c1-200 | head -400
    echo
    echo "## Our functions, inclusive (children) time"
    perf report -i "$data" --pid "$pids" --percentage relative --children --sort sym --stdio -g none --percent-limit 0.5 2>/dev/null |
        grep -E 'dcr_proxy|dcr-proxy' | head -40
} >"$report"
echo "profile.sh: report in $report"
