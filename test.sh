#!/usr/bin/env bash
# Runs every test: unit tests, and integration tests against the real binary, the real oidc-provider
# upstream (installed here from its pinned lock file) and, where a test needs it, a real PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")"
[ -d tests/upstream/node_modules ] || npm ci --prefix tests/upstream --no-audit --no-fund
node tests/upstream/smoke.mjs
cargo test --all-targets "$@"
