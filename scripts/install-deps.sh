#!/usr/bin/env bash
# Installs the Debian 12 packages slimta-cpp builds and tests with (as root, or with
# sudo). Does nothing when they are all present already.
#   scripts/install-deps.sh          what building slimta-queue needs
#   scripts/install-deps.sh --test   and what the test suite needs
set -euo pipefail
packages=(
  g++ cmake ninja-build pkg-config python3
  zlib1g-dev nlohmann-json3-dev libcli11-dev libfmt-dev libspdlog-dev
  libhiredis-dev libssl-dev libcurl4-openssl-dev libasio-dev libcrypt-dev libtomlplusplus-dev
  libsystemd-dev libmicrohttpd-dev
)
if [ "${1:-}" = "--test" ]; then
  packages+=(
    libgtest-dev libgmock-dev libbenchmark-dev libcpp-httplib-dev redis-server python3-aiosmtpd swaks
    openssl whois haproxy libnet-ssleay-perl libio-socket-ssl-perl
    dpkg-dev lintian man-db systemd adduser prometheus chromium clang-tidy
  )
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
# A fresh cloud machine often runs unattended-upgrades at first boot: wait for its dpkg
# lock (up to 10 minutes) instead of failing.
lock=(-o DPkg::Lock::Timeout=600)
$sudo apt-get "${lock[@]}" update -qq
$sudo apt-get "${lock[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
