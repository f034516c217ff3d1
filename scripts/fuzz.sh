#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for N seconds each (default 600), one after the other at the lowest
# CPU priority, and prints executions, executions per second and crashes per target.
#
#   scripts/fuzz.sh [seconds]            all targets
#   FUZZ_TARGETS="jws config" scripts/fuzz.sh 60
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Not part of CI.
# Seeds are read from fuzz/corpus/<target> (kept in git); what a run discovers goes to
# fuzz/corpus-run/<target> (ignored), crashing inputs to fuzz/artifacts/<target>/. To keep new
# coverage in the repo: the binary with `-merge=1 fuzz/corpus/<t> fuzz/corpus-run/<t>`.
# libFuzzer stops a target at its first crash; reproduce one with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/crash-...
set -euo pipefail

secs="${1:-600}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
all_targets="jws dn_rfc4514 dn_der metadata cert_header config"
read -r -a targets <<<"${FUZZ_TARGETS:-$all_targets}"
sanitizer="${FUZZ_SANITIZER:-address}"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: needs the nightly toolchain and cargo-fuzz: rustup toolchain install nightly && cargo install cargo-fuzz" >&2
    exit 2
fi

echo "building ${targets[*]} (sanitizer: $sanitizer)"
for t in "${targets[@]}"; do
    nice -n 19 cargo +nightly fuzz build --sanitizer "$sanitizer" "$t"
done

triple="$(rustc +nightly -vV | sed -n 's/^host: //p')"
bindir="fuzz/target/$triple/release"
logdir="fuzz/target/logs"
mkdir -p "$logdir"

results=()
failed=0
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus-run/$t" "fuzz/artifacts/$t"
    dict=()
    [[ -f "fuzz/dict/$t.dict" ]] && dict=("-dict=fuzz/dict/$t.dict")
    log="$logdir/$t.log"
    echo "fuzzing $t for ${secs}s (log: $log)"
    started=$(date +%s)
    set +e
    nice -n 19 "$bindir/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" "${dict[@]}" \
        "fuzz/corpus-run/$t" "fuzz/corpus/$t" >"$log" 2>&1
    rc=$?
    set -e
    took=$(($(date +%s) - started))
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
    cov="$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2 || true)"
    # libFuzzer stops at the first crash (panic, sanitizer report, timeout or out-of-memory).
    crashes=0
    if grep -qE '^==[0-9]+== ERROR|^thread .* panicked|deadly signal|ERROR: libFuzzer' "$log"; then crashes=1; fi
    artifact="$(sed -n 's/.*Test unit written to //p' "$log" | tail -1 || true)"
    if [[ $rc -ne 0 && $crashes -eq 0 ]]; then
        # No crash report: the fuzzer did not run (bad flag, dictionary, corpus); the log says why.
        [[ -z "$execs" ]] && artifact="did not run: $log"
        crashes=1
    fi
    if [[ $crashes -ne 0 ]]; then failed=1; fi
    results+=("$(printf '%-12s %8s %14s %10s %6s %8s  %s' "$t" "${took}s" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$crashes" "$artifact")")
done

echo
printf '%-12s %8s %14s %10s %6s %8s  %s\n' target time executions exec/s cov crashes artifact
printf '%s\n' "${results[@]}"
exit "$failed"
