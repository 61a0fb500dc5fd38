#!/usr/bin/env bash
# Install the Debian packages flowcast needs when they are missing (root, or sudo when available).
# Usage: scripts/system-deps.sh [demo|test|bench]
set -euo pipefail
want=(ffmpeg fonts-dejavu-core)
# NetfilterQueue (the [test] extra: namespace load tests) builds from source, and `make venv`
# installs that extra for demo too, so every mode needs its compiler and headers
want+=(gcc libnetfilter-queue-dev)
case "${1:-demo}" in
  test) want+=(chromium coturn prometheus iproute2 iptables) ;;
  bench) want+=(chromium nginx-light wrk) ;;
esac
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
