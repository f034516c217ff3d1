#!/usr/bin/env bash
# Checks the Rust side of the prerequisites against Cargo.toml's rust-version.
#   scripts/rust-check.sh         the rustc on PATH is at least rust-version (demo.sh, test.sh: a clear message
#                                 instead of Debian's cargo 1.63 failing on `edition = "2024"`)
#   scripts/rust-check.sh --lock  rust-version is at least the highest rust-version among the locked dependencies
#                                 built for this host (CI: a lock update must not leave the declared minimum false)
set -euo pipefail
cd "$(dirname "$0")/.."

# "1.89" -> "1.89.0", so that sort -V compares like cargo does.
full() {
  local a b c
  IFS=. read -r a b c <<<"$1"
  echo "$a.${b:-0}.${c:-0}"
}

# True when version $1 >= $2.
at_least() {
  [ "$(printf '%s\n%s\n' "$(full "$1")" "$(full "$2")" | sort -V | head -n1)" = "$(full "$2")" ]
}

declared=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml)
[ -n "$declared" ] || { echo "rust-check: Cargo.toml has no rust-version" >&2; exit 1; }

if [ "${1:-}" = "--lock" ]; then
  host=$(rustc -vV | sed -n 's/^host: //p')
  # Every package's rust_version in one line of JSON; ours is among them, so the maximum is ours when it is
  # high enough.
  needed=$(cargo metadata --format-version 1 --locked --filter-platform "$host" |
    grep -o '"rust_version":"[0-9.]*"' | cut -d'"' -f4 |
    while read -r v; do full "$v"; done | sort -V | tail -n1)
  if ! at_least "$declared" "$needed"; then
    echo "rust-check: Cargo.toml says rust-version = \"$declared\", but Cargo.lock needs $needed:" >&2
    cargo metadata --format-version 1 --locked --filter-platform "$host" |
      grep -o '"name":"[^"]*","version":"[^"]*"\|"rust_version":"[0-9.]*"' |
      awk -F'"' -v need="${needed%.0}" '/"name"/ { n = $4 "@" $8 } /rust_version/ && ($4 == need || $4 == need ".0") { print "  " n " rust-version " $4 }' >&2
    exit 1
  fi
  echo "rust-check: rust-version $declared covers Cargo.lock (highest: $needed)"
  exit 0
fi

if ! command -v rustc >/dev/null 2>&1 || ! command -v cargo >/dev/null 2>&1; then
  echo "Rust >= $declared (cargo, rustc) is needed: install it with rustup (see https://rustup.rs), not Debian's cargo (1.63)." >&2
  exit 1
fi
have=$(rustc --version | cut -d' ' -f2)
if ! at_least "${have%%-*}" "$declared"; then
  echo "Rust >= $declared is needed, $(command -v rustc) is $have: \`rustup update\`, or install rustup (see https://rustup.rs) and put ~/.cargo/bin first on PATH (Debian's cargo is 1.63)." >&2
  exit 1
fi
