#!/usr/bin/env bash
# Configures and builds slimta-cpp. usage: scripts/build.sh BUILD_DIR [cmake options...]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$1"
shift
cmake -S "$root" -B "$build" -G Ninja "$@" >/dev/null
ninja -C "$build"
