#!/usr/bin/env bash
# The Debian packages as an operator meets them: built by CPack from BUILD_DIR
# (configured with -DCMAKE_INSTALL_PREFIX=/usr), checked by lintian, installed with
# apt-get on this machine, then used: --version, check-config of the shipped file,
# serve from the shipped config as root (it must switch to the slimta user and queue a
# message into /var/spool/slimta), the man pages, the unit (systemd-analyze verify),
# and a project built against libslimta-cpp-dev. Everything is purged again at the end.
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
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null || true
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
dpkg-deb -c "$deb"

echo "== lintian (the tags left are overridden, each with its reason)"
lintian --fail-on warning,error "$deb" "$dev" 2>&1 | grep -v "running with root privileges" || true
lintian --fail-on warning,error "$deb" "$dev" >/dev/null 2>&1 || fail "lintian"

echo "== apt-get install $deb"
apt-get "${lock[@]}" install -y -qq "$deb" >/dev/null
[ "$(slimta-queue --version)" = "slimta-queue 0.1.0" ] || fail "slimta-queue --version"
slimta-queue --config /etc/slimta/slimta.toml check-config || fail "check-config of the shipped file"
getent passwd slimta >/dev/null || fail "no slimta user"
[ "$(stat -c %U:%G:%a /var/spool/slimta)" = "slimta:slimta:750" ] || fail "spool owner/mode"
[ "$(stat -c %U:%G:%a /etc/slimta/slimta.toml)" = "root:slimta:640" ] || fail "config owner/mode"
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

echo "== apt-get install $dev, and a project against it"
apt-get "${lock[@]}" install -y -qq "$dev" >/dev/null
"$root/tests/install/consumer_test.sh" --installed /usr

echo "== apt-get purge"
apt-get "${lock[@]}" purge -y -qq slimta-cpp libslimta-cpp-dev >/dev/null
[ ! -e /usr/sbin/slimta-queue ] && [ ! -e /etc/slimta/slimta.toml ] || fail "purge left files"
echo "package-test: ok"
