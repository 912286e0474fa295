#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds (warnings as errors), lints with
# clang-tidy, and runs every test (ctest -L unit for the in-process part alone), then runs
# them again under AddressSanitizer + UndefinedBehaviorSanitizer; builds without the
# optional parts; builds, lints, installs and purges the Debian packages (as root).
#   SLIMTA_SKIP_SANITIZE=1   local opt-out of the sanitizer pass (CI never sets it)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# Two tests per core: most of their time is spent waiting on servers, sockets and timers.
jobs="$((2 * $(nproc)))"
"$root/scripts/install-deps.sh" --test
# moto_server (S3 + SQS API server for the cloud tests) comes with python3's moto,
# which this machine has under pyenv.
if [ -d "$HOME/.pyenv/shims" ]; then export PATH="$HOME/.pyenv/shims:$PATH"; fi

echo "== build (RelWithDebInfo)"
"$root/scripts/build.sh" "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLIMTA_BUILD_TESTS=ON \
  -DSLIMTA_BUILD_BENCH=ON -DCMAKE_INSTALL_PREFIX=/usr -DSLIMTA_WERROR=ON
echo "== clang-tidy (.clang-tidy's checks)"
"$root/scripts/tidy.sh" "$root/build"
echo "== tests"
ctest --test-dir "$root/build" --output-on-failure -j "$jobs"

echo "== build without Redis, cloud and SMTP, and a project against its install"
"$root/scripts/build.sh" "$root/build-minimal" -DSLIMTA_WITH_REDIS=OFF -DSLIMTA_WITH_CLOUD=OFF \
  -DSLIMTA_WITH_SMTP=OFF -DSLIMTA_BUILD_TESTS=OFF -DSLIMTA_WERROR=ON
"$root/tests/install/consumer_test.sh" "$root/build-minimal"

if [ "${SLIMTA_SKIP_SANITIZE:-0}" != "1" ]; then
  echo "== build (ASan + UBSan)"
  "$root/scripts/build.sh" "$root/build-asan" -DCMAKE_BUILD_TYPE=Debug -DSLIMTA_SANITIZE=ON \
    -DSLIMTA_BUILD_BENCH=OFF
  echo "== tests under ASan + UBSan"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "$root/build-asan" --output-on-failure -j "$jobs"
fi

# Last: it installs the packages (and the slimta user, which serve would switch to) and
# purges them again.
echo "== Debian packages"
"$root/scripts/package-test.sh" "$root/build"
