#!/bin/sh
# Compiles one BPF C file reproducibly: same source + same clang -> same bytes, whatever
# directory the clone lives in (-fdebug-prefix-map drops the absolute path from DWARF),
# so CI can tell a stale committed object by comparing bytes. An object built under bpf/
# (the program's own, not a bench's) is also embedded as bpf/NAME_object.ts, which the
# backend imports: the object and its module are always made together.
#   usage: bpf/build.sh SRC.bpf.c OUT.o   (run from the repository root)
set -eu
src=${1:?usage: bpf/build.sh SRC.bpf.c OUT.o}
out=${2:?usage: bpf/build.sh SRC.bpf.c OUT.o}
if ! command -v clang >/dev/null 2>&1; then
  echo "bpf/build.sh: clang not found: install it with \`apt-get install clang\` (or run \`make deps\`)" >&2
  exit 1
fi
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -dumpmachine 2>/dev/null || uname -m)
clang -O2 -g -target bpf -I"/usr/include/$multiarch" -Ibpf \
  -fdebug-prefix-map="$(pwd)=." -c "$src" -o "$out"
case $out in
  bpf/testdata/*) ;;
  bpf/*.bpf.o) sh bpf/embed.sh "$out" "${out%.bpf.o}_object.ts" ;;
esac
