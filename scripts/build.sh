#!/usr/bin/env bash
# Configures and builds slimta-cpp.
# usage: scripts/build.sh BUILD_DIR [--target TARGET] [cmake options...]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$1"
shift
targets=()
if [ "${1:-}" = "--target" ]; then
  targets=("$2")
  shift 2
fi
cmake -S "$root" -B "$build" -G Ninja "$@" >/dev/null
ninja -C "$build" "${targets[@]}"
