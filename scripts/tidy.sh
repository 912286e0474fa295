#!/usr/bin/env bash
# clang-tidy with the tree's .clang-tidy on every source of src/ and tools/, from a
# build's compile_commands.json (default: build/). Exits non-zero on any finding.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build}"
tidy="$(command -v clang-tidy || command -v clang-tidy-14)"
cd "$root"
find src tools -name '*.cc' -print0 |
  xargs -0 -n 4 -P "$(nproc)" "$tidy" -p "$build" --quiet 2>/dev/null
