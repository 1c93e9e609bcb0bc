#!/bin/sh
# Installs what a fresh Debian 12 machine needs to build, run and test stb-netacct.
# Idempotent: packages already present are not touched, apt is only asked when needed.
set -eu
cd "$(dirname "$0")/.."
APT_PACKAGES="clang llvm libbpf-dev libbpf1 bpftool iproute2 iperf3 nftables libnftables1 iptables
  conntrack util-linux procps kmod make jq tmux file binutils systemd"
# The real-systemd test boots systemd 252 in systemd-nspawn; pinned so the machine's own
# systemd is not upgraded along with it.
PINNED="systemd-container=252.38-1~deb12u1"
missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing Debian packages:$missing; run \`sudo make deps\`" >&2
    exit 1
  fi
  echo "deps: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
  echo "deps: Debian packages present"
fi
if ! dpkg-query -W -f='${Status}' systemd-container 2>/dev/null | grep -q "install ok installed"; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "deps: installing $PINNED"
    [ -n "$missing" ] || apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$PINNED" >/dev/null
  fi
fi
if ! command -v node >/dev/null 2>&1; then
  echo "deps: node and npm are needed to fetch deno and the JS packages: apt-get install nodejs npm" >&2
  exit 1
fi
if [ ! -x node_modules/.bin/deno ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "deps: npm ci (deno, commander, asciichart, esbuild)"
  npm ci --no-audit --no-fund --loglevel=error
else
  echo "deps: node_modules up to date ($(node_modules/.bin/deno --version | head -n1))"
fi
