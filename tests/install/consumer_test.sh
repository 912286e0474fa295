#!/usr/bin/env bash
# cmake --install's dev component into a temp prefix, then the consumer project built
# against it twice: with find_package(slimta CONFIG) and with pkg-config. Each binary
# must queue a message and read it back.
# Usage: consumer_test.sh BUILD_DIR          (installs into a temp prefix)
#        consumer_test.sh --installed PREFIX  (what is installed there: the .deb's /usr)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if [ "$1" = "--installed" ]; then
  prefix="$2"
else
  prefix="$tmp/prefix"
  cmake --install "$1" --prefix "$prefix" --component dev >/dev/null
fi
for f in include/slimta/storage.h include/slimta/queue.h; do
  [ -f "$prefix/$f" ] || { echo "not installed: $f"; exit 1; }
done
if grep -l '"factory/\|"core/' "$prefix"/include/slimta/*.h; then
  echo "an installed header includes a private one"; exit 1
fi

echo "== find_package(slimta CONFIG)"
cmake -S "$here/consumer" -B "$tmp/cmake-build" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$tmp/cmake-build" >/dev/null
id="$("$tmp/cmake-build/consumer" "$tmp/spool1")"
[ -n "$id" ] && [ -n "$(ls "$tmp/spool1/msg")" ] || { echo "no message queued"; exit 1; }
echo "queued $id"

echo "== pkg-config slimta"
pc="$(find "$prefix/lib" -name slimta.pc)"
flags="$(PKG_CONFIG_PATH="$(dirname "$pc")" pkg-config --cflags --libs slimta)"
# shellcheck disable=SC2086
g++ -o "$tmp/consumer-pc" "$here/consumer/main.cc" $flags
# A build without a part needs none of its libraries.
for part in redis_storage:hiredis cloud_storage:libcurl; do
  if [ ! -f "$prefix/include/slimta/${part%%:*}.h" ] && ldd "$tmp/consumer-pc" | grep -q "${part#*:}"; then
    echo "built without ${part%%:*} but linked with ${part#*:}"; exit 1
  fi
done
id="$("$tmp/consumer-pc" "$tmp/spool2")"
[ -n "$id" ] && [ -n "$(ls "$tmp/spool2/msg")" ] || { echo "no message queued"; exit 1; }
echo "queued $id"
