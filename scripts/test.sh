#!/bin/sh
# The whole suite: static checks, then every deno test (unit tests beside the code, real-kernel
# backend tests, end-to-end tests in tests/ that spawn the built ./stb-netacct), then the
# kernel-6.1 lane (the kernel-facing tests again inside Debian 12's own kernel under qemu,
# tests/kernel61/lane.ts; STB_NETACCT_SKIP_KERNEL61=1 skips it for quick local runs). Needs root.
# Ends with one line "N passed, N failed" and exits non-zero on any failure.
set -u
cd "$(dirname "$0")/.."
DENO=${DENO:-node_modules/.bin/deno}
passed=0 failed=0
log=$(mktemp)
counts=$(mktemp)
trap 'rm -f "$log" "$counts"' EXIT

check() { # name, command...
  name=$1
  shift
  if "$@" >"$log" 2>&1; then
    passed=$((passed + 1))
    echo "check $name ... ok"
  else
    failed=$((failed + 1))
    echo "check $name ... FAILED"
    sed 's/^/    /' "$log" | tail -n 40
  fi
}

if [ "$(id -u)" -ne 0 ]; then
  echo "test: the suite loads BPF programs and firewall rules into the real kernel: run it as root (sudo make test)" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

check fmt "$DENO" fmt --check
check lint "$DENO" lint
check types "$DENO" check main.ts '**/*.ts'
check bpf-object sh bpf/check_object.sh

export STB_NETACCT_BIN="${STB_NETACCT_BIN:-$(pwd)/stb-netacct}"
# A suite killed before its cleanup ran left namespaces and cgroups: they would fail every
# leftover check of this one. Only those of processes that are gone are removed.
"$DENO" run --allow-all --no-prompt tests/harness/sweep.ts
"$DENO" test --allow-all --no-prompt "$@" 2>&1 | tee "$log"
# Deno's summary: "ok | 12 passed (3 steps) | 0 failed (1s)" or "FAILED | 9 passed | 2 failed".
summary=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^(ok|FAILED) \| [0-9]+ passed' | tail -n 1)
if [ -z "$summary" ]; then
  echo "test: deno test printed no summary (crashed or found no tests)"
  failed=$((failed + 1))
else
  p=$(echo "$summary" | sed -E 's/.*\| ([0-9]+) passed.*/\1/')
  f=$(echo "$summary" | sed -E 's/.*\| ([0-9]+) failed.*/\1/')
  passed=$((passed + p))
  failed=$((failed + f))
fi

# The kernel-6.1 lane prints a line per guest test (or one line saying why it skipped: a skip
# is no pass) and leaves "PASSED FAILED SKIPPED" in $counts.
"$DENO" run --allow-all --no-prompt tests/kernel61/lane.ts --counts "$counts"
if read -r kp kf _ < "$counts" && [ -n "$kp" ] && [ -n "$kf" ]; then
  passed=$((passed + kp))
  failed=$((failed + kf))
else
  echo "kernel-6.1 lane ... FAILED: it reported no counts (crashed?)"
  failed=$((failed + 1))
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
