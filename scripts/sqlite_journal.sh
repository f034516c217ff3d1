#!/usr/bin/env bash
# CPU and time per commit of the SQLite store's write pattern under each rollback-journal mode (issue 16 (c),
# docs/decisions.md "The SQLite rollback journal is PERSIST"). Builds scripts/sqlite_journal/commit.c against the
# SQLite amalgamation that rusqlite bundles (the same C code the proxy runs), then runs ROUNDS alternating rounds
# of COMMITS transactions per mode on core 1, synchronous=FULL, in a directory on the disk under test (DIR).
#
#   scripts/sqlite_journal.sh                 TRUNCATE vs PERSIST, 5 rounds of 2000 commits in target/
#   MODES="DELETE TRUNCATE PERSIST" ROUNDS=3 DIR=/var/lib/dcr scripts/sqlite_journal.sh
#   MODES="PERSIST:NORMAL:random PERSIST WAL:EXCLUSIVE" scripts/sqlite_journal.sh
#   MODES="PERSIST PERSIST:NORMAL:ordered:1024 PERSIST:NORMAL:ordered:8192" scripts/sqlite_journal.sh
#   MODES="PERSIST PERSIST:NORMAL:ordered:4096:split" scripts/sqlite_journal.sh
#   for n in 1 2 4 8 16; do REGS=$n COMMITS=$((4000 / n)) MODES=PERSIST ROUNDS=2 scripts/sqlite_journal.sh; done
# A mode is <journal mode>[:<locking mode>[:<ids>[:<page size>[:<layout>]]]]: locking NORMAL (the proxy's) or
# EXCLUSIVE; ids ordered (the proxy's UUIDv7 row ids) or random (UUIDv4, its row ids before 2026-12-02); page size
# in bytes (4096, SQLite's default and the proxy's); layout one (the SSA and metadata in the registration's row)
# or split (in a table of their own, written once, so an activation rewrites only the narrow row). REGS: the
# registrations whose writes (a pending insert, an earlier row's activation) one commit carries (default 4).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v gcc >/dev/null || { echo "sqlite_journal.sh: gcc is needed" >&2; exit 2; }
ver=$(awk '/^name = "libsqlite3-sys"/{getline; print $3}' Cargo.lock | tr -d '"')
src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"libsqlite3-sys-$ver"/sqlite3 2>/dev/null | head -1)
[[ -n "$src" ]] || { echo "sqlite_journal.sh: libsqlite3-sys $ver not in the cargo registry; run cargo build first" >&2; exit 2; }
out=target/sqlite_journal
mkdir -p "$out"
gcc -O2 -I"$src" -o "$out/commit" scripts/sqlite_journal/commit.c "$src/sqlite3.c" -lpthread -ldl -lm
dir="${DIR:-$out}"
pin=(); [[ "$(nproc)" -ge 2 ]] && pin=(taskset -c 1)
for _ in $(seq "${ROUNDS:-5}"); do
    for m in ${MODES:-TRUNCATE PERSIST}; do
        IFS=: read -r jm lm ids ps layout <<<"$m"
        printf '%s ' "$m"
        "${pin[@]}" "$out/commit" "$jm" "${COMMITS:-2000}" "$dir/journal-test.db" "${lm:-NORMAL}" "${ids:-ordered}" "${ps:-4096}" "${layout:-one}" "${REGS:-4}"
    done
done | tee "$out/rounds.txt"
rm -f "$dir/journal-test.db" "$dir/journal-test.db-journal" "$dir/journal-test.db-wal"
median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
echo "medians:"
for m in ${MODES:-TRUNCATE PERSIST}; do
    cpu=$(awk -v m="$m" '$1 == m {print $5}' "$out/rounds.txt" | median)
    wall=$(awk -v m="$m" '$1 == m {print $10}' "$out/rounds.txt" | median)
    printf '%-24s %s us CPU/commit, %s us/commit\n' "$m" "$cpu" "$wall"
done
