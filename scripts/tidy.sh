#!/usr/bin/env bash
# clang-tidy with the tree's .clang-tidy on every source of src/ and tools/, from a
# build's compile_commands.json (default: build/). Exits non-zero on any finding.
# (clang 14 compiles C++20 coroutines but does not say so to libstdc++ 12's <coroutine>,
# and Asio looks for clang's coroutines in <experimental/coroutine>, which libstdc++ has
# not: the defines say where they are.)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build}"
tidy="$(command -v clang-tidy || command -v clang-tidy-14)"
cd "$root"
find src tools -name '*.cc' -print0 |
  xargs -0 -n 4 -P "$(nproc)" "$tidy" -p "$build" --quiet \
    --extra-arg=-D__cpp_impl_coroutine=201902L --extra-arg=-DASIO_HAS_CO_AWAIT=1 \
    --extra-arg=-DASIO_HAS_STD_COROUTINE=1 2>/dev/null
