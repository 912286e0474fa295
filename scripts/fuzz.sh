#!/usr/bin/env bash
# Bounded fuzzing with clang's libFuzzer (Debian clang-14), under ASan + UBSan: builds
# the targets of tests/fuzz/ into build-fuzz/ and runs each for SECONDS (default 60)
# from its checked-in corpus. New interesting inputs go to build-fuzz/corpus/TARGET;
# a crash leaves its input in build-fuzz/ and makes this script fail. Copy inputs worth
# keeping into tests/fuzz/corpus/TARGET/: the test suite runs every one of them.
#   usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(smtp_command record message address_list proxy_header smtp_reply http_head cluster_slots)
build="$root/build-fuzz"
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSLIMTA_FUZZ=ON -DSLIMTA_SANITIZE=ON -DSLIMTA_BUILD_BENCH=OFF >/dev/null
ninja -C "$build" "${targets[@]/#/fuzz_}"
for t in "${targets[@]}"; do
  mkdir -p "$build/corpus/$t"
  echo "== fuzz_$t for ${seconds}s"
  (cd "$build" && ./tests/fuzz_"$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "$build/corpus/$t" "$root/tests/fuzz/corpus/$t")
done
