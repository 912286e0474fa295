#!/usr/bin/env bash
# The main job on the embedded default storage: build slimta-queue if needed, run
# `slimta-queue serve` on the default disk spool (./spool), send it a message over SMTP
# with Python's smtplib, list the queue, and stop the server with SIGTERM.
#
# serve delivers to --smarthost HOST:PORT (or, without one, to each domain's MX hosts).
# Here the smarthost is a port where nothing listens, so the first attempt is deferred
# and the message stays queued, with its next attempt time, for `slimta-queue list`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
q="$root/build/slimta-queue"
cd "$root"
port="${SLIMTA_DEMO_PORT:-2525}"
"$q" serve --listen "127.0.0.1:$port" --storage disk:./spool --smarthost "127.0.0.1:$((port + 1))" &
serve=$!
trap 'kill -TERM $serve 2>/dev/null; wait $serve 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
  sleep 0.1
done
python3 - "$port" <<'PY'
import smtplib, sys
with smtplib.SMTP('127.0.0.1', int(sys.argv[1])) as s:
    s.sendmail('alice@example.com', ['bob@example.org'],
               b'From: Alice <alice@example.com>\r\nTo: Bob <bob@example.org>\r\n'
               b'Subject: hello from slimta-queue\r\n\r\nThis message waits in ./spool.\r\n')
print('sent one message over SMTP to 127.0.0.1:%s' % sys.argv[1])
PY
sleep 0.5  # the first delivery attempt
"$q" list --storage disk:./spool
