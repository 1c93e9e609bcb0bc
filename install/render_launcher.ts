/**
 * Prints the build-tree launcher for scripts/build.sh (a separate entry point: the bundle
 * includes launcher.ts, where `import.meta.main` would be true):
 *
 *   deno run --no-config --allow-read install/render_launcher.ts \
 *     --perms-file scripts/permissions.txt [--libdir dist] > stb-netacct
 */

import { parsePermissionsFile, renderLauncher } from "./launcher.ts";

const i = Deno.args.indexOf("--perms-file");
const j = Deno.args.indexOf("--libdir");
if (i < 0 || !Deno.args[i + 1]) {
  console.error("usage: render_launcher.ts --perms-file scripts/permissions.txt [--libdir dist]");
  Deno.exit(2);
}
const perms = parsePermissionsFile(Deno.readTextFileSync(Deno.args[i + 1]));
const text = renderLauncher({ relative: j >= 0 ? Deno.args[j + 1] : "dist" }, perms);
await Deno.stdout.write(new TextEncoder().encode(text));
