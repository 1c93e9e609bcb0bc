/**
 * What the installed unit must allow for a config, and the configs it cannot honour. The
 * service runs confined (unit.ts): it writes only its runtime directory and what the unit
 * opens for it, and talks IP only when /metrics is served. install renders the unit from
 * this, so every feature the config turns on works under it, and refuses the rest with the
 * key, the value and the fix instead of installing a service that fails in a loop.
 */

import { type Cidr, isExcluded, parseCidr, parseIpv4, parseIpv6 } from "../lib/cidr.ts";
import type { Config } from "../lib/config.ts";
import { UsageError } from "../lib/errors.ts";
import { RUNTIME_DIR, type UnitFeatures } from "./unit.ts";

/**
 * Where a textfile directory may be: install gives the service write access to it, so
 * never a system directory. node-exporter's own is /var/lib/prometheus/node-exporter.
 */
export const TEXTFILE_ROOTS = ["/var/lib/", "/srv/"];
/** What systemd's ReadWritePaths= takes without quoting, and a plain path has. */
const PLAIN_PATH = /^\/[A-Za-z0-9._@+\/-]+$/;
const LOOPBACK: Cidr[] = ["127.0.0.0/8", "::1/128"].map((c) => parseCidr(c));

const dirOf = (p: string) => p.slice(0, p.lastIndexOf("/")) || "/";

/** The unit's features for `config` (read from `source`), or a UsageError naming the fix. */
export function serviceFeatures(config: Config, source: string): UnitFeatures {
  checkOutput(config.output, source);
  return {
    textfileDir: textfileDir(config.prometheus.textfile, source),
    listen: listenNeeds(config.prometheus, source),
  };
}

function checkOutput(output: string, source: string): void {
  const name = output.slice(RUNTIME_DIR.length + 1);
  if (output.startsWith(`${RUNTIME_DIR}/`) && name.length > 0 && !name.includes("/")) return;
  throw new UsageError(
    `"output" is ${JSON.stringify(output)} in ${source}, but the hardened service may only ` +
      `write ${RUNTIME_DIR}/: set "output" to "${RUNTIME_DIR}/counters.json" (or reset the ` +
      `config with --force)`,
  );
}

/** The directory the unit must open for the textfile; null when there is none to open. */
function textfileDir(textfile: string | null, source: string): string | null {
  if (textfile === null) return null;
  const dir = dirOf(textfile);
  if (dir === RUNTIME_DIR) return null;
  const fix = `set "prometheus.textfile" to a file in node-exporter's textfile directory, ` +
    `like "/var/lib/prometheus/node-exporter/stb_netacct.prom", or to null for none`;
  const under = TEXTFILE_ROOTS.find((r) => dir.startsWith(r) && dir.length > r.length);
  if (!under || !PLAIN_PATH.test(dir) || dir.split("/").some((p) => p === "." || p === "..")) {
    throw new UsageError(
      `"prometheus.textfile" is ${JSON.stringify(textfile)} in ${source}, but the ` +
        `installed service is only given write access to a plain directory below ` +
        `${TEXTFILE_ROOTS.join(" or ")} (never a system directory): ${fix}`,
    );
  }
  return dir;
}

/**
 * The socket family, and whether peers beyond this host may connect: only when the config
 * says "prometheus.allow_remote" (lib/config.ts refuses a non-loopback listen otherwise).
 */
function listenNeeds(
  prometheus: Config["prometheus"],
  source: string,
): UnitFeatures["listen"] {
  const listen = prometheus.listen;
  if (listen === null) return null;
  const v4 = parseIpv4(listen.hostname);
  const bytes = v4 ?? parseIpv6(listen.hostname);
  if (!bytes) {
    throw new UsageError(
      `"prometheus.listen" names ${JSON.stringify(listen.hostname)} in ${source}, which is ` +
        `not an IP address: use "127.0.0.1:${listen.port}"`,
    );
  }
  const family = v4 ? "AF_INET" : "AF_INET6";
  if (isExcluded(bytes, LOOPBACK)) return { family, remote: false };
  if (prometheus.allowRemote) return { family, remote: true };
  // validateConfig refuses this already; kept so a Config built elsewhere cannot slip by.
  throw new UsageError(
    `"prometheus.listen" is not a loopback address in ${source}: use ` +
      `"127.0.0.1:${listen.port}", or set "prometheus.allow_remote": true to serve it there ` +
      `on purpose`,
  );
}
