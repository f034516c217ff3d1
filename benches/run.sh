#!/usr/bin/env bash
# One command for the whole benchmark: dcr-proxy (release build) vs nginx, one table at the end.
# Not part of the tests or CI: figures depend on the machine. BENCH_SECONDS=<n> sets each run's length.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light
fi
cargo bench --bench proxy
