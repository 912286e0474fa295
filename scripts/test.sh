#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds (warnings as errors), lints with
# clang-tidy, and runs every test (ctest -L unit for the in-process part alone), then runs
# them again under AddressSanitizer + UndefinedBehaviorSanitizer; builds without the
# optional parts; builds, lints, installs and purges the Debian packages (as root).
# A step that fails does not stop the others that do not need it: the summary at the
# end names every step that failed, every step skipped and why, and every test skipped.
#   SLIMTA_SKIP_SANITIZE=1   local opt-out of the sanitizer pass (CI never sets it)
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# Two tests per core: most of their time is spent waiting on servers, sockets and timers.
jobs="$((2 * $(nproc)))"
logs="$(mktemp -d)"
passed=() failed=() skipped=()

# step NAME COMMAND...: runs it, and records how it ended.
step() {
  local name="$1"
  shift
  echo "== $name"
  if "$@"; then
    passed+=("$name")
    return 0
  fi
  failed+=("$name")
  return 1
}
skip() { skipped+=("$1 ($2)"); }
# ctest, its output kept to count what it skipped.
run_ctest() {
  local dir="$1" log="$logs/$(basename "$1").log"
  shift
  env "$@" ctest --test-dir "$dir" --output-on-failure -j "$jobs" 2>&1 | tee "$log"
}

step "install dependencies" "$root/scripts/install-deps.sh" --test || exit 1
# moto_server (S3 + SQS API server for the cloud tests) comes with python3's moto,
# which this machine has under pyenv.
if [ -d "$HOME/.pyenv/shims" ]; then export PATH="$HOME/.pyenv/shims:$PATH"; fi

if step "build (RelWithDebInfo)" "$root/scripts/build.sh" "$root/build" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLIMTA_BUILD_TESTS=ON -DSLIMTA_BUILD_BENCH=ON \
  -DCMAKE_INSTALL_PREFIX=/usr -DSLIMTA_WERROR=ON; then
  step "clang-tidy (.clang-tidy's checks)" "$root/scripts/tidy.sh" "$root/build"
  step "tests" run_ctest "$root/build"
else
  skip "clang-tidy" "the build failed"
  skip "tests" "the build failed"
fi

if step "build without Redis, cloud and SMTP" "$root/scripts/build.sh" "$root/build-minimal" \
  -DSLIMTA_WITH_REDIS=OFF -DSLIMTA_WITH_CLOUD=OFF -DSLIMTA_WITH_SMTP=OFF \
  -DSLIMTA_BUILD_TESTS=OFF -DSLIMTA_WERROR=ON; then
  step "a project against the minimal install" "$root/tests/install/consumer_test.sh" \
    "$root/build-minimal"
else
  skip "a project against the minimal install" "its build failed"
fi

if [ "${SLIMTA_SKIP_SANITIZE:-0}" = "1" ]; then
  skip "ASan + UBSan" "SLIMTA_SKIP_SANITIZE=1"
elif step "build (ASan + UBSan)" "$root/scripts/build.sh" "$root/build-asan" \
  -DCMAKE_BUILD_TYPE=Debug -DSLIMTA_SANITIZE=ON -DSLIMTA_BUILD_BENCH=OFF; then
  step "tests under ASan + UBSan" run_ctest "$root/build-asan" \
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
else
  skip "tests under ASan + UBSan" "their build failed"
fi

# Last: it installs the packages (and the slimta user, which serve would switch to) and
# purges them again.
if [[ " ${passed[*]} " == *" build (RelWithDebInfo) "* ]]; then
  step "Debian packages" "$root/scripts/package-test.sh" "$root/build"
else
  skip "Debian packages" "the build failed"
fi

echo "== summary"
for s in "${passed[@]}"; do echo "passed:  $s"; done
for s in "${skipped[@]}"; do echo "SKIPPED: $s"; done
for s in "${failed[@]}"; do echo "FAILED:  $s"; done
for log in "$logs"/*.log; do
  [ -e "$log" ] || continue
  n="$(grep -c '\*\*\*Skipped' "$log" || true)"
  [ "$n" = 0 ] || { echo "tests skipped in $(basename "$log" .log): $n"; grep '\*\*\*Skipped' "$log"; }
  grep -A1000 "The following tests FAILED" "$log" | grep -E '^\s+[0-9]+ - ' |
    sed "s/^/test failed in $(basename "$log" .log): /" || true
done
rm -rf "$logs"
[ "${#failed[@]}" = 0 ]
