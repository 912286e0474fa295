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
echo "== building slimta-queue (the first build takes a few minutes)"
"$root/scripts/build.sh" "$root/build" --target slimta-queue -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSLIMTA_BUILD_TESTS=OFF -DSLIMTA_BUILD_BENCH=OFF
q="$root/build/slimta-queue"
cd "$root"
port="${SLIMTA_DEMO_PORT:-2525}"
said="$(mktemp)"
# --user: the demo runs as whoever runs it (started as root, serve would otherwise
# become the packaged service's user, if installed, which may not reach ./spool).
"$q" serve --listen "127.0.0.1:$port" --storage disk:./spool --smarthost "127.0.0.1:$((port + 1))" \
  --user "$(id -un)" >"$said" 2>&1 &
serve=$!
trap 'kill -TERM $serve 2>/dev/null; wait $serve 2>/dev/null || true; rm -f "$said"' EXIT
# Its own "listening on" line, not just any server on the port.
for _ in $(seq 100); do
  grep -q "listening on" "$said" && break
  if ! kill -0 "$serve" 2>/dev/null; then
    cat "$said" >&2
    if grep -q "in use" "$said"; then
      echo "demo: port $port is taken; set SLIMTA_DEMO_PORT to another port" >&2
    else
      echo "demo: slimta-queue serve did not start (its error is above)" >&2
    fi
    exit 1
  fi
  sleep 0.1
done
grep -q "listening on" "$said" || { echo "demo: serve did not start in 10 s" >&2; exit 1; }
cat "$said"
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
