#!/usr/bin/env bash
# The concurrency tests under ThreadSanitizer: the storage conformance suite (every
# backend), the queue engine, several processes on one storage, the SMTP server, and
# the power-loss workloads. A build of its own in build-tsan/.
#   scripts/tsan.sh [extra gtest filter]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ -d "$HOME/.pyenv/shims" ]; then export PATH="$HOME/.pyenv/shims:$PATH"; fi
"$root/scripts/build.sh" "$root/build-tsan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLIMTA_TSAN=ON \
  -DSLIMTA_BUILD_BENCH=OFF
filter="${1:-Backends/ConformanceTest.*:QueueTest.*:QueueThreadsTest.*:Storages/MultiProcessTest.*:ServerFixture.*:PowerLossTest.*}"
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
  ctest --test-dir "$root/build-tsan" --output-on-failure -j "$(nproc)" \
  -R "test_servers|$(echo "$filter" | sed 's/\*/.*/g; s/:/|/g')"
