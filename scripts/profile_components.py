#!/usr/bin/env python3
"""Sums `perf report --no-children --sort dso,sym -g none` lines (read on stdin) by component: the kernel, each
Rust crate on the path, aws-lc, the allocator, libc's memory functions, SQLite. Used by scripts/profile.sh."""

import re
import sys

LINE = re.compile(r"^\s*([0-9.]+)%\s+(\S+)\s+\[(.)\]\s+(.*?)\s*$")
# The first crate a demangled Rust symbol names: `hyper::proto::..`, `<hyper::..>::poll`, `_<tokio::..>`.
CRATE = re.compile(r"^[_<&\s]*(?:mut\s+|dyn\s+)?([a-z_][a-z0-9_]*)::")
ALLOC = ("malloc", "free", "realloc", "calloc", "sdallocx", "rallocx", "do_rallocx", "mallocx", "_rjem_",
         "tcache", "arena_", "_int_malloc", "_int_free", "__rdl_", "__rust_alloc", "__rust_dealloc",
         "__rust_realloc", "alloc::alloc::", "tikv_jemalloc")
CRYPTO = ("aws_lc", "_aesni", "aead_aes", "aes_", "gcm_", "bn_", "ecp_nistz", "__ecp_nistz", "ec_", "x25519",
          "fiat_", "sha256_", "sha512_", "RSA_", "BN_", "EVP_", "ChaCha", "poly1305")


def component(dso: str, kind: str, sym: str) -> str:
    if kind == "k" or dso.startswith("[kernel"):
        return "kernel"
    if sym.startswith("__mem") or sym.startswith("mem") or sym.startswith("__strlen"):
        return "libc mem* (copies, compares, fills)"
    if sym.startswith(ALLOC) or "malloc" in sym:
        return "allocator"
    if sym.startswith("sqlite3") or "sqlite" in dso:
        return "sqlite"
    if "aws_lc" in sym or sym.startswith(CRYPTO):
        return "aws-lc (crypto)"
    m = CRATE.match(sym)
    if m:
        name = m.group(1)
        if name in ("core", "alloc", "std"):
            return "Rust std/core"
        return name
    if dso.startswith("libc"):
        return "libc other"
    return "other: " + dso


def main() -> None:
    totals: dict[str, float] = {}
    for line in sys.stdin:
        m = LINE.match(line)
        if not m:
            continue
        pct, dso, kind, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4)
        c = component(dso, kind, sym)
        totals[c] = totals.get(c, 0.0) + pct
    user = sum(v for k, v in totals.items() if k != "kernel")
    print(f"| component | % of samples | % of user space |")
    print(f"|---|---|---|")
    for name, pct in sorted(totals.items(), key=lambda kv: -kv[1]):
        if pct < 0.2:
            continue
        share = "" if name == "kernel" or user == 0 else f"{100 * pct / user:.1f}"
        print(f"| {name} | {pct:.1f} | {share} |")


if __name__ == "__main__":
    main()
