#!/bin/sh
# Builds ./stb-netacct. Preferred: `deno compile`, one self-contained binary. It needs the
# denort runtime, which deno downloads (or takes from $DENORT_BIN); offline that fails, and
# then the fallback is an esbuild bundle of the same code plus a launcher that runs it with
# the installed deno and the same permissions. Either way the build says which it made.
set -eu
cd "$(dirname "$0")/.."
DENO="${DENO:-node_modules/.bin/deno}"
ESBUILD="${ESBUILD:-node_modules/.bin/esbuild}"
FLAGS=$(grep -v '^#' scripts/deno_flags.txt | tr '\n' ' ')
OUT=stb-netacct
mkdir -p dist
rm -f "$OUT.tmp"

# The bundle is built either way: the fallback runs it, and it proves the code bundles.
# commander is CommonJS and requires node:* built-ins; Deno provides them, and the banner gives
# the ESM bundle the `require` that esbuild's CommonJS wrappers call.
"$ESBUILD" main.ts --bundle --platform=node --format=esm --target=esnext --log-level=warning \
  --banner:js="import { createRequire as __stbRequire } from 'node:module'; const require = __stbRequire(import.meta.url);" \
  --outfile=dist/stb-netacct.js.tmp
mv dist/stb-netacct.js.tmp dist/stb-netacct.js

if timeout 120 "$DENO" compile --quiet --no-check $FLAGS --output "$OUT.tmp" main.ts >dist/compile.log 2>&1 \
  && "./$OUT.tmp" --version >/dev/null 2>&1; then
  mv "$OUT.tmp" "$OUT"
  echo "build: ./$OUT is a deno compile binary ($(du -h "$OUT" | cut -f1))"
  exit 0
fi
rm -f "$OUT.tmp"
reason=$(sed 's/\x1b\[[0-9;]*m//g; s|https\{0,1\}://[^ )]*|<runtime url>|g' dist/compile.log \
  | grep -E '^ +[0-9]+: ' | grep -v '<unknown>' | tail -n 1 | sed 's/^ *[0-9]*: //' | cut -c1-160)
echo "build: deno compile unavailable (${reason:-see dist/compile.log}); making the fallback launcher"

# The launcher carries the deno binary and the bundle next to it in dist/, so it keeps
# working when node_modules is gone and can be installed as a unit.
# Copy then rename: a running launcher keeps its old deno (no "Text file busy").
cmp -s "$(readlink -f "$DENO")" dist/deno 2>/dev/null || {
  cp "$(readlink -f "$DENO")" dist/deno.tmp && mv dist/deno.tmp dist/deno
}
# One launcher generator serves the build tree and `install` (install/launcher.ts).
"$DENO" run --quiet --no-config --allow-read install/render_launcher.ts \
  --flags-file scripts/deno_flags.txt --libdir dist > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
chmod 0755 "$OUT"
"./$OUT" --version >/dev/null
echo "build: ./$OUT is a fallback launcher (dist/deno + dist/stb-netacct.js, $(du -sh dist | cut -f1))"
