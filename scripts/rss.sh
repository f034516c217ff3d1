#!/usr/bin/env bash
# Memory of the proxy under connections, on loopback with real mTLS (the test upstream and JWKS server of
# tests/support): RSS idle (after one registration), with 1000 kept-alive connections that each made a
# pass-through request, 60 s after they close, and 60 s after each of two floods of 2000 such connections.
# Fails unless the targets of issue 16 (d) hold: ≤ 20 MiB idle, ≤ 64 MiB at 1000, ≤ 1.5x idle after load.
#
#   scripts/rss.sh               the release binary, as deployed (~4 minutes after the build)
#   RSS_DEBUG=1 scripts/rss.sh   the debug build (reuses the test build; larger binary, higher RSS)
#
# Environment reaches the proxy (it inherits the test's), e.g. MALLOC_CONF=... to try allocator settings.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if [[ ! -d tests/upstream/node_modules ]]; then
    npm ci --prefix tests/upstream --no-audit --no-fund
fi
profile=(--release)
[[ "${RSS_DEBUG:-0}" == 1 ]] && profile=()

nice -n 10 cargo test "${profile[@]}" --test soak memory_returns_after_connection_floods -- \
    --ignored --nocapture --test-threads=1
