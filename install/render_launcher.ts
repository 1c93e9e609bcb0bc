/**
 * Prints the build-tree launcher for scripts/build.sh (a separate entry point: the bundle
 * includes launcher.ts, where `import.meta.main` would be true):
 *
 *   deno run --no-config --allow-read install/render_launcher.ts \
 *     --flags-file scripts/deno_flags.txt [--libdir dist] > stb-netacct
 */

import { parseDenoFlagsFile, renderLauncher } from "./launcher.ts";

const i = Deno.args.indexOf("--flags-file");
const j = Deno.args.indexOf("--libdir");
const flagsFile = i < 0 ? undefined : Deno.args[i + 1];
if (!flagsFile) {
  console.error("usage: render_launcher.ts --flags-file scripts/deno_flags.txt [--libdir dist]");
  Deno.exit(2);
}
const flags = parseDenoFlagsFile(Deno.readTextFileSync(flagsFile));
const text = renderLauncher({ relative: (j < 0 ? undefined : Deno.args[j + 1]) ?? "dist" }, flags);
await Deno.stdout.write(new TextEncoder().encode(text));
