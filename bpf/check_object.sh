#!/bin/sh
# Fails when a committed BPF object is not what its source compiles to (someone edited
# the .c and forgot to rebuild), or when the TypeScript module embedding an object under
# bpf/ (bpf/NAME_object.ts, what the backend really loads) is not that object's bytes.
# The object comparison is skipped, successfully, where clang is absent; the module
# comparison needs no clang and always runs.
#   usage: bpf/check_object.sh [SRC.bpf.c OUT.o ...]   (run from the repository root)
set -eu
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  set -- bpf/netacct.bpf.c bpf/netacct.bpf.o bpf/events.bpf.c bpf/events.bpf.o bpf/dns.bpf.c bpf/dns.bpf.o \
    bpf/calibrate.bpf.c bpf/calibrate.bpf.o bench/trivial.bpf.c bench/trivial.bpf.o \
    bpf/testdata/refused.bpf.c bpf/testdata/refused.bpf.o
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
have_clang=yes
if ! command -v clang >/dev/null 2>&1; then
  have_clang=no
  echo "check-bpf: clang is not installed: object staleness not checked (the committed objects are used as they are)"
fi
status=0
while [ $# -ge 2 ]; do
  src=$1 obj=$2
  shift 2
  case $obj in
    bpf/testdata/*) ;;
    bpf/*.bpf.o)
      module=${obj%.bpf.o}_object.ts
      sh bpf/embed.sh "$obj" "$tmp/module.ts"
      if cmp -s "$tmp/module.ts" "$module"; then
        echo "check-bpf: $module embeds $obj"
      else
        echo "check-bpf: $module does not embed the committed $obj (missing, edited, or" \
          "left behind by a rebuild): regenerate it with \`make bpf\` (or" \
          "\`sh bpf/embed.sh $obj $module\`) and commit both" >&2
        status=1
      fi
      ;;
  esac
  [ "$have_clang" = yes ] || continue
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
