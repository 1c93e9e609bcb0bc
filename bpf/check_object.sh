#!/bin/sh
# Fails when a committed BPF object is not what its source compiles to (someone edited
# the .c and forgot to rebuild). Skips, successfully, where clang is absent.
#   usage: bpf/check_object.sh [SRC.bpf.c OUT.o ...]   (run from the repository root)
set -eu
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  set -- bpf/netacct.bpf.c bpf/netacct.bpf.o bench/trivial.bpf.c bench/trivial.bpf.o
fi
if ! command -v clang >/dev/null 2>&1; then
  echo "check-bpf: skipped, clang is not installed (the committed objects are used as they are)"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
status=0
while [ $# -ge 2 ]; do
  src=$1 obj=$2
  shift 2
  bpf/build.sh "$src" "$tmp/fresh.o"
  if cmp -s "$tmp/fresh.o" "$obj"; then
    echo "check-bpf: $obj is up to date"
  else
    built_by=$(strings "$obj" 2>/dev/null | grep -m1 'clang version' || echo "unknown clang")
    echo "check-bpf: $obj is stale: it differs from what $src compiles to now;" \
      "rebuild it with \`make bpf\` and commit it (committed object made by: $built_by;" \
      "here: $(clang --version | head -n1))" >&2
    status=1
  fi
done
exit $status
