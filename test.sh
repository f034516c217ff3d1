#!/usr/bin/env bash
# Runs every test: unit, and integration tests against the real binary, the real oidc-provider upstream
# (installed here from its pinned lock file), real PostgreSQL where a test needs it, and the upstream's own
# smoke test. Ends with one summary line over all cargo test binaries.
set -euo pipefail
cd "$(dirname "$0")"
scripts/rust-check.sh
. scripts/node-env.sh
[ -d tests/upstream/node_modules ] || npm ci --prefix tests/upstream --no-audit --no-fund
node tests/upstream/smoke.mjs
out=$(mktemp)
trap 'rm -f "$out"' EXIT
set +e
cargo test --all-targets "$@" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i == "passed;") p += $(i-1); if ($i == "failed;") f += $(i-1) } }
     END { printf "cargo: %d passed, %d failed\n", p, f }' "$out"
exit "$rc"
