#!/bin/sh
# Installs what a fresh Debian 12 machine needs to build, run and test stb-netacct.
# Idempotent: packages already present are not touched, apt is only asked when needed.
set -eu
cd "$(dirname "$0")/.."
APT_PACKAGES="clang llvm libbpf-dev libbpf1 bpftool iproute2 iperf3 nftables libnftables1 iptables
  conntrack ethtool util-linux procps kmod make jq tmux file binutils systemd"
# Test-only: promtool (package prometheus) checks the metrics output. Installing it must not
# start a Prometheus server on a developer's machine, hence policy-rc.d while apt runs.
TEST_ONLY="prometheus"
# Test-only, for the kernel-6.1 lane (tests/kernel61/): qemu boots Debian 12's kernel, static
# busybox is the guest's init, xz cuts the uncompressed kernel out of its bzImage (busybox's
# unxz lacks the x86 filter the kernel's stream uses). amd64 only; when they cannot be had the
# lane says so and skips, the rest of the suite is unaffected.
KERNEL61_TEST_ONLY="qemu-system-x86 busybox-static xz-utils"
# The real-systemd test boots systemd 252 in systemd-nspawn; pinned so the machine's own
# systemd is not upgraded along with it.
PINNED="systemd-container=252.38-1~deb12u1"

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
updated=""
apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing Debian packages: $*; run \`sudo make deps\`" >&2
    exit 1
  fi
  [ -n "$updated" ] || { apt-get update -qq; updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=""
for p in $APT_PACKAGES; do installed "$p" || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "deps: installing$missing"
  # shellcheck disable=SC2086
  apt_install $missing
else
  echo "deps: Debian packages present"
fi
for p in $TEST_ONLY; do
  installed "$p" && continue
  echo "deps: installing $p (test-only; its service is not started)"
  had_policy=""
  [ -e /usr/sbin/policy-rc.d ] && had_policy=1
  [ -n "$had_policy" ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 0755 /usr/sbin/policy-rc.d; }
  rc=0
  apt_install "$p" || rc=$?
  [ -n "$had_policy" ] || rm -f /usr/sbin/policy-rc.d
  [ "$rc" -eq 0 ] || exit "$rc"
done
if [ "$(dpkg --print-architecture)" = amd64 ]; then
  missing=""
  for p in $KERNEL61_TEST_ONLY; do installed "$p" || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    echo "deps: installing$missing (test-only: the kernel-6.1 lane)"
    # shellcheck disable=SC2086
    apt_install $missing || echo "deps: could not install$missing: the kernel-6.1 lane will skip" >&2
  fi
fi
installed systemd-container || { echo "deps: installing $PINNED"; apt_install "$PINNED"; }

if ! command -v node >/dev/null 2>&1; then
  echo "deps: node and npm are needed to fetch deno and the JS packages: apt-get install nodejs npm" >&2
  exit 1
fi
if [ ! -x node_modules/.bin/deno ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # `npm install`, not `npm ci`: npm 11 leaves the other platforms' optional deno binaries
  # out of the lock file and `npm ci` then refuses it; install honours the lock as it is.
  echo "deps: npm install (deno, commander, asciichart, esbuild, as locked)"
  npm install --no-audit --no-fund --loglevel=error
else
  echo "deps: node_modules up to date ($(node_modules/.bin/deno --version | head -n1))"
fi
