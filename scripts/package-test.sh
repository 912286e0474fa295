#!/usr/bin/env bash
# The Debian packages as an operator meets them: built by CPack from BUILD_DIR
# (configured with -DCMAKE_INSTALL_PREFIX=/usr), checked by lintian, installed with
# apt-get on this machine, then used: --version, check-config of the shipped file,
# serve from the shipped config as root (it must switch to the slimta user and queue a
# message into /var/spool/slimta), the README's set-up (passwd, a TLS key, check-config)
# run by the unit's user with root's hold/release/retry and a SIGHUP reload, the man
# pages, the unit (systemd-analyze verify), and a project built against
# libslimta-cpp-dev. Everything is purged again at the end.
# Needs root. Usage: scripts/package-test.sh BUILD_DIR
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$(cd "$1" && pwd)"
out="$(mktemp -d)"
export DEBIAN_FRONTEND=noninteractive
lock=(-o DPkg::Lock::Timeout=600)
fail() { echo "package-test: FAILED: $*" >&2; exit 1; }
had_user=0
getent passwd slimta >/dev/null && had_user=1
serve_pid=""
sink_pid=""
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null || true
  [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null || true
  rm -f /etc/slimta/readme.toml /etc/slimta/users /etc/slimta/users.lock /etc/slimta/key.pem \
    /etc/slimta/cert.pem
  apt-get "${lock[@]}" purge -y -qq slimta-cpp libslimta-cpp-dev >/dev/null 2>&1 || true
  # The packages leave the user and the spool (it may hold mail): this test removes its own.
  if [ "$had_user" = 0 ] && getent passwd slimta >/dev/null; then deluser --system slimta >/dev/null 2>&1; fi
  rm -rf /var/spool/slimta "$out"
}
trap cleanup EXIT

echo "== cpack"
(cd "$build" && cpack -G DEB -B "$out" >/dev/null)
deb="$(ls "$out"/slimta-cpp_*.deb)"
dev="$(ls "$out"/libslimta-cpp-dev_*.deb)"
sendmail="$(ls "$out"/slimta-cpp-sendmail_*.deb)"
dpkg-deb -c "$deb"
dpkg-deb -c "$sendmail"

echo "== lintian (the tags left are overridden, each with its reason)"
lintian --fail-on warning,error "$deb" "$dev" "$sendmail" 2>&1 | grep -v "running with root privileges" || true
lintian --fail-on warning,error "$deb" "$dev" "$sendmail" >/dev/null 2>&1 || fail "lintian"

echo "== apt-get install $deb"
apt-get "${lock[@]}" install -y -qq "$deb" >/dev/null
[ "$(slimta-queue --version)" = "slimta-queue 0.1.0" ] || fail "slimta-queue --version"
slimta-queue --config /etc/slimta/slimta.toml check-config || fail "check-config of the shipped file"
getent passwd slimta >/dev/null || fail "no slimta user"
[ "$(stat -c %U:%G:%a /var/spool/slimta)" = "slimta:slimta:750" ] || fail "spool owner/mode"
[ "$(stat -c %U:%G:%a /etc/slimta/slimta.toml)" = "root:slimta:640" ] || fail "config owner/mode"
# A bare command reads the packaged configuration; before the first start the spool is
# an empty directory, which is an empty queue.
[ "$(cd / && slimta-queue list)" = "Mail queue is empty" ] || fail "bare list: $(cd / && slimta-queue list 2>&1)"
grep -qx /etc/slimta/slimta.toml /var/lib/dpkg/info/slimta-cpp.conffiles || fail "conffile"
for page in slimta-queue.8 slimta.toml.5; do
  file="/usr/share/man/man${page##*.}/$page.gz"
  [ -f "$file" ] || fail "no $file"
  [ -n "$(MANWIDTH=80 man -l "$file" 2>&1 | grep -i "^NAME")" ] || fail "$file does not render"
done
systemd-analyze verify /usr/lib/systemd/system/slimta-queue.service || fail "the unit"

echo "== serve as root from the shipped config: runs as slimta, queues into /var/spool/slimta"
log="$out/serve.log"
slimta-queue --config /etc/slimta/slimta.toml serve --listen 127.0.0.1:0 \
  --relay-networks 127.0.0.0/8 --dns-server 127.0.0.1:9 >"$log" 2>&1 &
serve_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
port="$(grep -o 'listening on 127.0.0.1:[0-9]*' "$log" | grep -o '[0-9]*$')" || fail "serve: $(cat "$log")"
[ "$(stat -c %U /proc/$serve_pid)" = "slimta" ] || fail "serve does not run as slimta"
python3 -c "import smtplib; smtplib.SMTP('127.0.0.1', $port).sendmail('a@example.com', ['b@example.invalid'], b'Subject: packaged\r\n\r\nhello\r\n')"
slimta-queue --config /etc/slimta/slimta.toml list | grep -q "b@example.invalid" || fail "not queued"
[ -z "$(find /var/spool/slimta ! -user slimta)" ] || fail "spool files not the slimta user's"
kill "$serve_pid"
wait "$serve_pid" || fail "serve did not stop cleanly: $(cat "$log")"
serve_pid=""

echo "== the README's set-up, run as the unit runs it (user slimta), the CLI as root"
free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
smtp_port="$(free_port)"; submission_port="$(free_port)"; sink_port="$(free_port)"
conf=/etc/slimta/readme.toml
cat >"$conf" <<TOML
storage = "disk:/var/spool/slimta"

[serve]
listen = "127.0.0.1:$smtp_port"
relay-networks = "127.0.0.0/8"
tls-cert = "/etc/slimta/cert.pem"
tls-key = "/etc/slimta/key.pem"
users = "/etc/slimta/users"
smarthost = "127.0.0.1:$sink_port"

[[listener]]
address = "127.0.0.1:$submission_port"
role = "submission"
TOML
chown root:slimta "$conf" && chmod 0640 "$conf"
# A key as root usually keeps it: 0600. check-config, run as root, reads it as slimta.
openssl req -x509 -newkey rsa:2048 -nodes -keyout /etc/slimta/key.pem -out /etc/slimta/cert.pem \
  -subj /CN=localhost -days 2 2>/dev/null
chmod 0600 /etc/slimta/key.pem
printf 'alice-secret\n' | slimta-queue --config "$conf" passwd alice --users /etc/slimta/users
[ "$(stat -c %U:%G:%a /etc/slimta/users)" = "root:slimta:640" ] || fail "passwd: users file $(stat -c %U:%G:%a /etc/slimta/users)"
if slimta-queue --config "$conf" check-config >/dev/null 2>"$out/check.err"; then
  fail "check-config passed a key the service user cannot read"
fi
grep -q "tls-key '/etc/slimta/key.pem': serve runs as user slimta, which cannot read it" "$out/check.err" ||
  fail "check-config: $(cat "$out/check.err")"
chown root:slimta /etc/slimta/key.pem && chmod 0640 /etc/slimta/key.pem
slimta-queue --config "$conf" check-config >/dev/null || fail "check-config of the README's set-up"
log="$out/readme.log"
setpriv --reuid=slimta --regid=slimta --init-groups slimta-queue --config "$conf" serve >"$log" 2>&1 &
serve_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
grep -q "listening on" "$log" || fail "serve as slimta: $(cat "$log")"
# Submitted with AUTH after STARTTLS while the smarthost is down: it waits in the queue.
python3 - "$submission_port" <<'PY' || fail "submission with AUTH"
import smtplib, ssl, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]))
s.starttls(context=ssl._create_unverified_context())
s.login('alice', 'alice-secret')
s.sendmail('alice@example.org', ['far@example.net'], b'Subject: readme\r\n\r\nhello\r\n')
s.quit()
PY
id=""
for _ in $(seq 100); do
  id="$(slimta-queue --config "$conf" list --json | python3 -c '
import json, sys
print("".join(m["id"] for m in json.load(sys.stdin) if m["attempts"] and
              any(r["address"] == "far@example.net" for r in m["recipients"])))')"
  [ -n "$id" ] && break; sleep 0.1
done
[ -n "$id" ] || fail "the submitted message was not attempted: $(cat "$log")"
for action in hold release retry; do slimta-queue --config "$conf" "$action" "$id" >/dev/null || fail "$action as root"; done
[ -z "$(find /var/spool/slimta ! -user slimta)" ] || fail "root's CLI left files slimta does not own: $(find /var/spool/slimta ! -user slimta)"
kill -HUP "$serve_pid"
for _ in $(seq 100); do grep -q "configuration reloaded" "$log" && break; sleep 0.1; done
grep -q "configuration reloaded" "$log" || fail "SIGHUP reload as slimta: $(cat "$log")"
/usr/bin/python3 "$root/tests/support/sink.py" "$sink_port" "$out/sink.jsonl" >"$out/sink.out" 2>&1 &
sink_pid=$!
for _ in $(seq 100); do grep -q ready "$out/sink.out" && break; sleep 0.1; done
slimta-queue --config "$conf" retry "$id" >/dev/null || fail "retry as root"
for _ in $(seq 200); do grep -q far@example.net "$out/sink.jsonl" 2>/dev/null && break; sleep 0.1; done
grep -q far@example.net "$out/sink.jsonl" 2>/dev/null || fail "not delivered: $(cat "$log")"
kill "$serve_pid" "$sink_pid"
wait "$serve_pid" || fail "serve did not stop cleanly: $(cat "$log")"
serve_pid="" sink_pid=""

echo "== $sendmail: the system's sendmail and mailq, in place of its MTA"
for field in Provides Conflicts Replaces; do
  [ "$(dpkg-deb -f "$sendmail" "$field")" = mail-transport-agent ] || fail "$field of $sendmail"
done
[ "$(dpkg-deb -f "$sendmail" Depends)" = "slimta-cpp (= 0.1.0-1)" ] || fail "Depends of $sendmail"
# apt puts it in the place of the MTA installed: simulated (the tests need this Postfix).
plan="$(apt-get "${lock[@]}" -s install "$sendmail" 2>&1)" || fail "apt-get -s install: $plan"
grep -q "^Inst slimta-cpp-sendmail" <<<"$plan" || fail "not installable: $plan"
if dpkg -s postfix >/dev/null 2>&1; then
  grep -q "^Remv postfix" <<<"$plan" || fail "Postfix is not replaced: $plan"
fi
# Its links, unpacked beside a copy of the installed program, act as sendmail and mailq.
dpkg-deb -x "$sendmail" "$out/root"
[ "$(readlink "$out/root/usr/sbin/sendmail")" = slimta-queue ] || fail "/usr/sbin/sendmail"
[ "$(readlink "$out/root/usr/lib/sendmail")" = ../sbin/sendmail ] || fail "/usr/lib/sendmail"
[ "$(readlink "$out/root/usr/bin/mailq")" = ../sbin/slimta-queue ] || fail "/usr/bin/mailq"
cp /usr/sbin/slimta-queue "$out/root/usr/sbin/"
for q in "$out/root/usr/bin/mailq" "$out/root/usr/lib/sendmail -bp"; do
  listed="$(cd / && $q 2>&1)" || fail "$q: $listed"
  grep -Eq "Mail queue is empty|Requests?\.$" <<<"$listed" || fail "$q: $listed"
done

echo "== apt-get install $dev, and a project against it"
apt-get "${lock[@]}" install -y -qq "$dev" >/dev/null
"$root/tests/install/consumer_test.sh" --installed /usr

echo "== apt-get purge"
apt-get "${lock[@]}" purge -y -qq slimta-cpp libslimta-cpp-dev >/dev/null
[ ! -e /usr/sbin/slimta-queue ] && [ ! -e /etc/slimta/slimta.toml ] || fail "purge left files"
echo "package-test: ok"
