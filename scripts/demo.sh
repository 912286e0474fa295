#!/usr/bin/env bash
# The main job on the embedded default storage: build slimta-queue if needed, queue a
# sample message into the default disk spool (./spool), and list the queue.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
q="$root/build/slimta-queue"
cd "$root"
printf 'From: Alice <alice@example.com>\r\nTo: Bob <bob@example.org>\r\nSubject: hello from slimta-queue\r\n\r\nThis message waits in ./spool for delivery.\r\n' \
  | "$q" enqueue --storage disk:./spool
"$q" list --storage disk:./spool
