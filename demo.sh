#!/usr/bin/env bash
# Brings up a working local setup and shows one registration: local certificates, the bundled
# oidc-provider upstream, the proxy with ./proxy.toml, and an OB registration over mutual TLS.
set -euo pipefail
cd "$(dirname "$0")"
scripts/rust-check.sh
. scripts/node-env.sh
[ -d tests/upstream/node_modules ] || npm ci --prefix tests/upstream --no-audit --no-fund
cargo build --quiet --bin dcr-proxy --example demo
exec target/debug/examples/demo "$@"
