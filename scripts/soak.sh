#!/usr/bin/env bash
# Soak: the real proxy, the test upstream (tests/upstream) and a JWKS server on loopback, driven for N
# minutes (default 30) with mixed traffic at a bounded rate: pass-through requests, registrations,
# GET/PUT/DELETE management, idle TLS connections, handshakes that never finish and plain text on the
# TLS port. Prints the proxy's RSS and open fds every minute, then a verdict: both must stay within
# 10 % of their value at the end of the warm-up (a tenth of the run, at least a minute).
#
#   scripts/soak.sh [minutes]           debug build (reuses the test build)
#   SOAK_RELEASE=1 scripts/soak.sh 30   the release binary, as deployed
#   SOAK_NICE=5 ...                     the run's CPU priority (default 10)
#
# The traffic only goes to 127.0.0.1, stops by itself at the end, and is not part of CI.
set -euo pipefail

minutes="${1:-30}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if [[ ! -d tests/upstream/node_modules ]]; then
    npm ci --prefix tests/upstream --no-audit --no-fund
fi
profile=()
[[ "${SOAK_RELEASE:-0}" == 1 ]] && profile=(--release)

SOAK_MINUTES="$minutes" nice -n "${SOAK_NICE:-10}" cargo test "${profile[@]}" --test soak the_proxy_stays_flat -- \
    --ignored --nocapture --test-threads=1
