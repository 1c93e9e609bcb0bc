/**
 * `uninstall`: stop the service and remove everything install made, whatever state the
 * service is in (running, failed, restarting, half-installed). What is there is looked at
 * after the service has stopped (stopping it removes its runtime directory), a path that
 * is already gone is not an error, and one step that fails does not keep the others from
 * running: the failures are reported together at the end, and a second run is a no-op.
 */

import { Command } from "@commander-js/extra-typings";
import { BACKEND_NAMES, loadBackend } from "../backends/mod.ts";
import { removeKeptPins } from "../backends/kept_state.ts";
import { DEFAULT_CONFIG_PATH, loadConfig } from "../lib/config.ts";
import { describeError } from "../lib/errors.ts";
import { COMPLETION_PATHS, MANPAGE_PATH } from "../cli/mod.ts";
import { BIN_PATH, LIB_ROOT } from "./program.ts";
import {
  CACHE_DIR,
  HISTORY_DIR,
  PRIVATE_CACHE_DIR,
  PRIVATE_STATE_DIR,
  RUNTIME_DIR,
  STATE_DIR,
  TEXTFILE_GROUP,
  UNIT_NAME,
  UNIT_PATH,
} from "./unit.ts";
import { exists, requireRoot, showUnit, systemctl, systemdBooted, SystemError } from "./system.ts";
import { removeTextfileGroup, revokeDirectory, textfileGroupId } from "./textfile_access.ts";

type Say = (line: string) => void;

const CONFIG_DIR = DEFAULT_CONFIG_PATH.slice(0, DEFAULT_CONFIG_PATH.lastIndexOf("/"));
const DOC_PATHS = [MANPAGE_PATH, ...Object.values(COMPLETION_PATHS)];
/** Where emptied documentation directories stop being removed. */
const DOC_ROOTS = ["/usr/local/share", "/usr/local/share/man"];

/** Paths install creates, in the order uninstall removes them. */
function installedPaths(purge: boolean): string[] {
  return [
    UNIT_PATH,
    BIN_PATH,
    LIB_ROOT,
    ...DOC_PATHS,
    RUNTIME_DIR,
    CACHE_DIR,
    PRIVATE_CACHE_DIR,
    ...(purge ? [CONFIG_DIR, STATE_DIR, PRIVATE_STATE_DIR, HISTORY_DIR] : []),
  ];
}

/**
 * Directories the service was given write access to: the unit's own record (its
 * ReadWritePaths=-DIR lines), and the config's textfile directory in case the unit is gone.
 */
export function grantedDirectories(unitText: string | null, configTextfile: string | null) {
  const dirs = new Set<string>();
  for (const m of (unitText ?? "").matchAll(/^ReadWritePaths=-(\/\S*)$/gm)) dirs.add(m[1]!);
  if (configTextfile) dirs.add(configTextfile.slice(0, configTextfile.lastIndexOf("/")));
  return [...dirs];
}

function configTextfile(): string | null {
  try {
    return loadConfig(DEFAULT_CONFIG_PATH, false).prometheus.textfile;
  } catch {
    return null; // unreadable: the unit's own record still names what was granted
  }
}

interface UninstallFacts {
  booted: boolean;
  /** systemd knows the unit (a file, or loaded from one since removed). */
  loaded: boolean;
  /** Not inactive or failed: running, starting, restarting, stopping. */
  running: boolean;
  grants: string[];
  groupId: number | null;
}

async function look(): Promise<UninstallFacts> {
  const booted = systemdBooted();
  const state = booted
    ? await showUnit(UNIT_NAME).catch(() => new Map<string, string>())
    : new Map<string, string>();
  const active = state.get("ActiveState") ?? "inactive";
  let unitText: string | null = null;
  try {
    unitText = Deno.readTextFileSync(UNIT_PATH);
  } catch { /* not installed, or already removed */ }
  return {
    booted,
    loaded: (state.get("LoadState") ?? "not-found") !== "not-found",
    running: !["inactive", "failed"].includes(active),
    grants: grantedDirectories(unitText, configTextfile()),
    groupId: textfileGroupId(),
  };
}

export async function uninstall(
  opts: { purge: boolean; dryRun: boolean },
  say: Say = console.log,
): Promise<void> {
  if (!opts.dryRun) requireRoot("uninstall");
  const facts = await look();
  if (opts.dryRun) return describe(facts, opts.purge, say);
  const installed = installedPaths(opts.purge).some(exists);
  const problems: string[] = [];
  const step = async (what: string, fn: () => Promise<void> | void) => {
    try {
      await fn();
    } catch (e) {
      problems.push(`${what}: ${describeError(e)}`);
    }
  };
  await step("stopping the service", () => stopService(facts, say));
  await removeLeftovers(say);
  await step("taking back the textfile access", () => revokeAccess(facts, say));
  // Looked at only now: stopping the service removed its runtime directory.
  for (const p of installedPaths(opts.purge).filter(exists)) {
    await step(`removing ${p}`, () => {
      try {
        Deno.removeSync(p, { recursive: true });
        say(`Removed ${p}`);
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
    });
  }
  pruneDocDirectories();
  if (facts.loaded) {
    await step("reloading systemd", () => systemctl("daemon-reload").then(() => {}));
    await systemctl("reset-failed", UNIT_NAME).catch(() => "");
  }
  finish({ facts, installed, purge: opts.purge, problems }, say);
}

async function stopService(f: UninstallFacts, say: Say): Promise<void> {
  if (f.loaded && exists(UNIT_PATH)) {
    await systemctl("disable", "--now", UNIT_NAME);
    say(`Stopped and disabled ${UNIT_NAME}`);
  } else if (f.running) {
    await systemctl("stop", UNIT_NAME);
    say(`Stopped ${UNIT_NAME}`);
  } else if (!f.booted && exists(UNIT_PATH)) {
    say(`systemd is not running here: removing the files only`);
  }
}

/**
 * A crashed or killed sampler, or the service (it keeps its kernel state across restarts),
 * leaves rules and pins behind; each backend's stop removes its own, and the ebpf pins go.
 */
async function removeLeftovers(say: Say): Promise<void> {
  try {
    for (const p of await removeKeptPins()) say(`Removed the pinned counters and links in ${p}`);
  } catch (e) {
    say(`Warning: could not remove the ebpf pins: ${(e as Error).message}`);
  }
  for (const name of BACKEND_NAMES) {
    try {
      await (await loadBackend(name)).stop();
    } catch (e) {
      say(`Warning: could not check for ${name} leftovers: ${(e as Error).message}`);
    }
  }
}

async function revokeAccess(f: UninstallFacts, say: Say): Promise<void> {
  if (f.groupId === null) return;
  for (const dir of f.grants) {
    if (revokeDirectory(dir, f.groupId)) {
      say(`Took ${TEXTFILE_GROUP}'s write access to ${dir} back`);
    }
  }
  if (await removeTextfileGroup()) say(`Removed the system group ${TEXTFILE_GROUP}`);
}

/** Directories the man page and completions were put in, once they are empty. */
function pruneDocDirectories(): void {
  for (const path of DOC_PATHS) {
    let dir = path.slice(0, path.lastIndexOf("/"));
    while (!DOC_ROOTS.includes(dir) && dir.startsWith("/usr/local/share/")) {
      try {
        Deno.removeSync(dir); // only an empty one
      } catch {
        break;
      }
      dir = dir.slice(0, dir.lastIndexOf("/"));
    }
  }
}

/** What uninstall found and did, for its last word. */
interface UninstallOutcome {
  facts: UninstallFacts;
  /** Some installed path was there before the removals. */
  installed: boolean;
  purge: boolean;
  /** The steps that failed, each with its error. */
  problems: string[];
}

function finish(done: UninstallOutcome, say: Say): void {
  const { facts: f, installed, purge, problems } = done;
  if (!purge && exists(CONFIG_DIR)) {
    say(`Kept ${CONFIG_DIR} (your config; \`uninstall --purge\` removes it)`);
  }
  if (problems.length > 0) {
    throw new SystemError(
      `uninstall did the rest, but not all of it:\n${problems.map((p) => `  ${p}`).join("\n")}` +
        `\nFix what is named, then run \`sudo stb-netacct uninstall${purge ? " --purge" : ""}\` ` +
        `again: it finishes the job`,
    );
  }
  const nothing = !f.loaded && !f.running && f.groupId === null && !installed;
  say(
    nothing ? "stb-netacct was not installed; nothing to remove." : "stb-netacct is uninstalled.",
  );
}

function describe(f: UninstallFacts, purge: boolean, say: Say): void {
  if (f.loaded && exists(UNIT_PATH)) say(`run    systemctl disable --now ${UNIT_NAME}`);
  else if (f.running) say(`run    systemctl stop ${UNIT_NAME}`);
  say(`clean  what any backend left (${BACKEND_NAMES.join(", ")})`);
  if (f.groupId !== null) {
    for (const d of f.grants) say(`revoke ${TEXTFILE_GROUP}'s write access to ${d}`);
    say(`run    groupdel ${TEXTFILE_GROUP}`);
  }
  for (const p of installedPaths(purge).filter(exists)) say(`remove ${p}`);
  if (f.loaded) say(`run    systemctl daemon-reload; systemctl reset-failed ${UNIT_NAME}`);
  if (!purge && exists(CONFIG_DIR)) say(`keep   ${CONFIG_DIR} (--purge removes it)`);
}

export function uninstallCommand() {
  return new Command("uninstall")
    .summary("stop and remove the service and the installed program (root)")
    .description(
      `Stop and disable ${UNIT_NAME}, remove the unit, ${BIN_PATH},\n` +
        `${LIB_ROOT}/, ${RUNTIME_DIR}/, the man page and completions, the\n` +
        `Prometheus textfile access install gave, and any rules a backend left behind.\n` +
        `The config ${DEFAULT_CONFIG_PATH} and the traffic history are kept unless --purge\n` +
        `is given. It finishes whatever state the service is in; run again, it changes nothing.`,
    )
    .option(
      "--purge",
      `also remove ${CONFIG_DIR}/, the state directory and the history (${HISTORY_DIR}/)`,
      false,
    )
    .option("--dry-run", "print what would be removed, change nothing", false)
    .addHelpText(
      "after",
      "\nExamples:\n" +
        "  sudo stb-netacct uninstall            # keep the config for a later install\n" +
        "  sudo stb-netacct uninstall --purge    # leave nothing behind\n",
    )
    .action(async (opts) => {
      await uninstall({ purge: opts.purge, dryRun: opts.dryRun });
    });
}
