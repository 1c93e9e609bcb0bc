#!/bin/sh
# Installs what a Debian 12 machine lacks. Idempotent: packages already present are not
# touched, apt is only asked when something is missing, npm only when node_modules does not
# match package-lock.json.
#   sh scripts/deps.sh        what `make build` needs: to build and to run (apt + npm)
#   sh scripts/deps.sh test   what only `make test` (and `make bench`) needs on top
set -eu
cd "$(dirname "$0")/.."
what=${1:-build}

# Run: libbpf1 (the ebpf backend, by FFI), nftables + libnftables1 (nft), iptables,
# util-linux (nsenter), systemd (install). Build: clang + libbpf-dev (`make bpf`; the
# objects are committed), make.
BUILD_PACKAGES="clang libbpf-dev libbpf1 nftables libnftables1 iptables util-linux systemd make"
# Test-only. The suite's lab: iproute2 (netns, veth), bpftool and ethtool (backend tests),
# curl (scrapes /metrics in the real-systemd test). promtool (package prometheus) checks
# the metrics output; groff and man-db render the man page; zsh and fish check their
# completions. iperf3 drives the benchmarks.
TEST_PACKAGES="iproute2 bpftool ethtool curl groff-base man-db zsh fish iperf3"
# Test-only, its service is never started (a policy-rc.d while apt runs) nor enabled.
TEST_SERVER_PACKAGES="prometheus"
# Test-only, for the kernel-6.1 lane (tests/kernel61/): qemu boots Debian 12's kernel, static
# busybox is the guest's init, xz cuts the uncompressed kernel out of its bzImage (busybox's
# unxz lacks the x86 filter the kernel's stream uses). amd64 only; when they cannot be had the
# lane says so and skips, the rest of the suite is unaffected.
KERNEL61_PACKAGES="qemu-system-x86 busybox-static xz-utils"
# The real-systemd test boots systemd 252 in systemd-nspawn; pinned so the machine's own
# systemd is not upgraded along with it.
PINNED="systemd-container=252.38-1~deb12u1"

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing() { for p in "$@"; do installed "$p" || printf ' %s' "$p"; done; }
updated=""
apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing Debian packages:$*; run \`sudo make ${what}\` or install them" >&2
    exit 1
  fi
  [ -n "$updated" ] || { apt-get update -qq; updated=1; }
  # shellcheck disable=SC2068
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $@ >/dev/null
}

# Installs a package that ships a server without starting it now or at the next boot.
install_server() {
  pkg=$1
  echo "deps: installing $pkg (test-only; its service is neither started nor enabled)"
  had_policy=""
  [ -e /usr/sbin/policy-rc.d ] && had_policy=1
  [ -n "$had_policy" ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 0755 /usr/sbin/policy-rc.d; }
  rc=0
  apt_install "$pkg" || rc=$?
  [ -n "$had_policy" ] || rm -f /usr/sbin/policy-rc.d
  [ "$rc" -eq 0 ] || exit "$rc"
  systemctl disable --quiet "$pkg.service" 2>/dev/null || true
}

# node_modules holds exactly what package-lock.json pins (optional packages for other
# platforms absent); node prints what differs.
npm_matches_lock() {
  [ -x node_modules/.bin/deno ] && [ -x node_modules/.bin/esbuild ] || return 1
  node -e '
    const fs = require("fs");
    const lock = JSON.parse(fs.readFileSync("package-lock.json", "utf8")).packages;
    let bad = 0;
    for (const [path, p] of Object.entries(lock)) {
      if (path === "") continue;
      let v = null;
      try { v = JSON.parse(fs.readFileSync(path + "/package.json", "utf8")).version; } catch {}
      if (v === null && p.optional) continue;
      if (v !== p.version) { console.error(`deps: ${path} is ${v ?? "missing"}, locked ${p.version}`); bad = 1; }
    }
    process.exit(bad);
  '
}

build_deps() {
  m=$(missing $BUILD_PACKAGES)
  if [ -n "$m" ]; then echo "deps: installing$m"; apt_install "$m"; else echo "deps: Debian packages present"; fi
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "deps: node and npm fetch deno and the JS packages: apt-get install nodejs npm (README: prerequisites)" >&2
    exit 1
  fi
  if npm_matches_lock; then
    echo "deps: node_modules matches package-lock.json ($(node_modules/.bin/deno --version | head -n1))"
  elif [ -L node_modules ]; then
    echo "deps: node_modules is a symlink (a git worktree?) and differs from package-lock.json: run \`npm ci\` where it points" >&2
    exit 1
  else
    # npm ci installs the lock as it is and never rewrites it.
    echo "deps: npm ci (deno, commander, asciichart, esbuild, as locked)"
    npm ci --no-audit --no-fund --loglevel=error
  fi
}

test_deps() {
  m=$(missing $TEST_PACKAGES)
  if [ -n "$m" ]; then echo "deps: installing$m (test-only)"; apt_install "$m"; else echo "deps: test packages present"; fi
  for p in $TEST_SERVER_PACKAGES; do installed "$p" || install_server "$p"; done
  if [ "$(dpkg --print-architecture)" = amd64 ]; then
    m=$(missing $KERNEL61_PACKAGES)
    if [ -n "$m" ]; then
      echo "deps: installing$m (test-only: the kernel-6.1 lane)"
      apt_install "$m" || echo "deps: could not install$m: the kernel-6.1 lane will skip" >&2
    fi
  fi
  installed systemd-container || { echo "deps: installing $PINNED (test-only)"; apt_install "$PINNED"; }
}

case $what in
  build) build_deps ;;
  test) test_deps ;;
  *) echo "usage: sh scripts/deps.sh [build|test]" >&2; exit 2 ;;
esac
