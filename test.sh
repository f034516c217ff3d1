#!/usr/bin/env bash
# Runs every test: unit, and integration tests against the real binary, the real oidc-provider upstream
# (installed here from its pinned lock file), real PostgreSQL where a test needs it, and the upstream's own
# smoke test. Then the test binaries that talk to the upstream run once more against its Keycloak stand-in
# (DCR_TEST_UPSTREAM=keycloak) and once against its ForgeRock AM stand-in (DCR_TEST_UPSTREAM=forgerock-am).
# Ends with one summary line per pass and one over all three.
set -euo pipefail
cd "$(dirname "$0")"
scripts/rust-check.sh
. scripts/node-env.sh
[ -d tests/upstream/node_modules ] || npm ci --prefix tests/upstream --no-audit --no-fund
node tests/upstream/smoke.mjs
out=$(mktemp)
kc=$(mktemp)
am=$(mktemp)
trap 'rm -f "$out" "$kc" "$am"' EXIT

# The suites whose worlds run an upstream; the others (store, config, jwks, …) do not change with its flavour.
UPSTREAM_SUITES=(ob_register ob_hostile ob_manage cdr forward forward_certs faults bearer_upstream bearer_jwt)

summary() {
    awk -v label="$2" '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i == "passed;") p += $(i-1); if ($i == "failed;") f += $(i-1) } }
         END { printf "%s: %d passed, %d failed\n", label, p, f }' "$1"
}

set +e
cargo test --no-fail-fast --all-targets "$@" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
args=()
for suite in "${UPSTREAM_SUITES[@]}"; do args+=(--test "$suite"); done
DCR_TEST_UPSTREAM=keycloak cargo test --no-fail-fast "${args[@]}" "$@" 2>&1 | tee "$kc"
kc_rc=${PIPESTATUS[0]}
DCR_TEST_UPSTREAM=forgerock-am cargo test --no-fail-fast "${args[@]}" "$@" 2>&1 | tee "$am"
am_rc=${PIPESTATUS[0]}
set -e
summary "$out" "cargo (rfc7591 upstream)"
summary "$kc" "cargo (keycloak stand-in)"
summary "$am" "cargo (forgerock-am stand-in)"
cat "$out" "$kc" "$am" > "$out.all"
summary "$out.all" "cargo"
rm -f "$out.all"
[ "$rc" -eq 0 ] || exit "$rc"
[ "$kc_rc" -eq 0 ] || exit "$kc_rc"
exit "$am_rc"
