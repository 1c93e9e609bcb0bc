#!/bin/sh
# The kernel-6.1 lane alone (tests/kernel61/lane.ts; `make test` runs it after the host suite):
# the kernel-facing tests inside Debian 12's own kernel under qemu, against the built
# ./stb-netacct (`make build` first). Root. Arguments go to lane.ts, e.g. `--filter nft`.
set -u
cd "$(dirname "$0")/.."
DENO=${DENO:-node_modules/.bin/deno}
export STB_NETACCT_BIN="${STB_NETACCT_BIN:-$(pwd)/stb-netacct}"
exec "$DENO" run --allow-all --no-prompt tests/kernel61/lane.ts "$@"
