#!/usr/bin/env bash
# Shows that the power-loss tests guard every sync of the disk spool: removes each
# fsync/fdatasync call of src/disk/disk_storage.cc in turn, rebuilds, and expects the
# power-loss tests (tests/disk/power_loss_test.cc) to fail. Prints one line per call;
# exits 1 if removing any of them goes unnoticed. Takes a few minutes (one rebuild of
# the disk library and the test binary per call). doc/format.md says which test
# guards which call.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -a "$root/CMakeLists.txt" "$root/include" "$root/src" "$root/tests" "$root/tools" "$work/"
cmake -S "$work" -B "$work/build" -G Ninja -DSLIMTA_BUILD_BENCH=OFF >/dev/null
ninja -C "$work/build" slimta_unit_tests >/dev/null
file=src/disk/disk_storage.cc
unguarded=0
for n in $(grep -n 'posix::sync_\(data\|all\)(' "$root/$file" | cut -d: -f1); do
  cp "$root/$file" "$work/$file"
  call=$(sed -n "${n}p" "$root/$file" | sed 's/^ *//')
  sed -i "${n}s#posix::sync_\(data\|all\)(.*;#(void)0;  // removed by check-syncs#" "$work/$file"
  if cmp -s "$root/$file" "$work/$file"; then echo "check-syncs: could not remove line $n" >&2; exit 2; fi
  ninja -C "$work/build" slimta_unit_tests >/dev/null
  if "$work/build/tests/slimta_unit_tests" --gtest_filter='PowerLoss*:FileFault*' >"$work/out" 2>&1; then
    echo "NOT GUARDED  $file:$n  $call"
    unguarded=1
  else
    echo "guarded      $file:$n  $call  -> $(grep -m1 -o 'FAILED  \] [A-Za-z.]*' "$work/out" | cut -c11-)"
  fi
done
exit $unguarded
