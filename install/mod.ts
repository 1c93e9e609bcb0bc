/**
 * `install`, `uninstall` and `status`: the service around `run`. install puts the program
 * where a root service can run it, writes the config (never over a user's), the hardened
 * unit (unit.ts), enables and (re)starts it, and waits for counters.json to be fresh.
 * Everything is compared first, so a second install changes nothing and says so.
 */

import { Command, Option } from "@commander-js/extra-typings";
import { AUTO, BACKEND_CHOICES, type BackendChoice, backendsOf } from "../backends/mod.ts";
import { removeKernelStateOf } from "../backends/kept_state.ts";
import {
  type Config,
  ConfigError,
  DEFAULT_CONFIG_PATH,
  defaultConfigJson,
  loadConfig,
  validateConfig,
} from "../lib/config.ts";
import { loadTrustedConfig } from "../lib/trusted_config.ts";
import { UsageError } from "../lib/errors.ts";
import { lookupUser } from "../lib/users.ts";
import { VERSION } from "../lib/version.ts";
import { documentationFiles } from "../cli/mod.ts";
import { BIN_PATH, currentProgram, LIB_ROOT, type ProgramFile } from "./program.ts";
import {
  HISTORY_DIR,
  renderUnit,
  RUNTIME_DIR,
  TEXTFILE_GROUP,
  UNIT_NAME,
  UNIT_PATH,
} from "./unit.ts";
import { serviceFeatures } from "./service_config.ts";
import {
  createTextfileGroup,
  grantDirectory,
  grantState,
  textfileGroupId,
} from "./textfile_access.ts";
import {
  exists,
  installFile,
  journalTail,
  modeOf,
  readBytesOrNull,
  requireRoot,
  sameBytes,
  sameFiles,
  showUnit,
  systemctl,
  systemdBooted,
  SystemError,
} from "./system.ts";
import { statusCommand } from "./status.ts";
import { uninstallCommand } from "./uninstall.ts";
import { CountersFileReader, isFresh } from "../lib/contract.ts";

export { statusCommand, uninstallCommand };

/** How long install waits for the first fresh counters.json after (re)starting. */
const FRESH_TIMEOUT_S = 30;

type Say = (line: string) => void;

interface PlannedFile extends ProgramFile {
  /** The bytes to write; a copied file is read only when it is written. */
  data: () => Uint8Array;
  state: "new" | "changed" | "unchanged";
  /** Shown in full by --dry-run (text files only). */
  show: boolean;
}

function plan(file: ProgramFile, show: boolean): PlannedFile {
  const text = file.text;
  const data = text !== undefined
    ? () => new TextEncoder().encode(text)
    : () => Deno.readFileSync(file.from!);
  let same: boolean;
  if (text !== undefined) {
    const old = readBytesOrNull(file.path);
    same = old !== null && sameBytes(old, data());
  } else {
    same = exists(file.path) && sameFiles(file.from!, file.path);
  }
  const state = !exists(file.path)
    ? "new"
    : same && modeOf(file.path) === file.mode
    ? "unchanged"
    : "changed";
  return { ...file, data, state, show };
}

function notSystemdMessage(backend: BackendChoice): string {
  return `systemd is not the service manager here (no /run/systemd/system), so ` +
    `there is no unit to install. Run the sampler yourself instead, in the foreground or ` +
    `from your init system:\n  sudo ${BIN_PATH} run --backend ${backend}\n` +
    `(after \`make build\`, \`sudo ./stb-netacct run --backend ${backend}\` works from the ` +
    `build tree too)`;
}

/** The "owner" a config install writes gets: --owner, else $SUDO_USER; null for root. */
function newConfigOwner(owner: string | undefined): string | null {
  const name = owner ?? Deno.env.get("SUDO_USER") ?? null;
  if (name === null || name === "root") return null;
  if (!lookupUser(name)) {
    throw new UsageError(
      `Owner ${JSON.stringify(name)} is not a user on this host: name an existing user ` +
        `with --owner (counters.json is readable by everyone either way)`,
    );
  }
  return name;
}

/**
 * The config the service will read: the existing file (which must be root's, as `run`
 * demands), else the one install writes. A config the service would refuse is refused here.
 */
function installedConfig(text: string | null): Config {
  try {
    if (text !== null) return validateConfig(JSON.parse(text), JSON.stringify(DEFAULT_CONFIG_PATH));
    return loadTrustedConfig(DEFAULT_CONFIG_PATH, true, 0);
  } catch (e) {
    if (e instanceof ConfigError) {
      throw new UsageError(
        `${e.message} (the installed service would fail on it; fix the file or reset it ` +
          `with --force)`,
        { cause: e },
      );
    }
    throw e;
  }
}

/** What install does so the service may write the Prometheus textfile (textfile_access.ts). */
interface TextfileAccess {
  /** The directory the unit opens, when it exists; null for none. */
  dir: string | null;
  createGroup: boolean;
  grant: boolean;
  /** Configured, but not there (node-exporter not installed): nothing to open yet. */
  absent: string | null;
}

function planAccess(dir: string | null): TextfileAccess {
  const none = { dir: null, createGroup: false, grant: false, absent: null };
  if (dir === null) return none;
  const gid = textfileGroupId();
  const state = grantState(dir, gid);
  if (state === "absent") return { ...none, absent: dir };
  return { dir, createGroup: gid === null, grant: state !== "granted", absent: null };
}

interface InstallOptions {
  backend: BackendChoice;
  owner?: string;
  dryRun: boolean;
  force: boolean;
  timeout: number;
  /** Man page and completions, rendered from the program (cli/). */
  docs: { path: string; text: string }[];
}

/** What install would write and run, compared with what is there. */
interface InstallPlan {
  booted: boolean;
  program: ReturnType<typeof currentProgram>;
  files: PlannedFile[];
  unitFile: PlannedFile;
  changed: PlannedFile[];
  /** The config install writes, or null when the one there is kept. */
  configText: string | null;
  configExists: boolean;
  /** systemctl argument lists, in order. */
  commands: string[][];
  /** Backends whose kernel state goes: the old unit's, not the new one's. */
  dropKernelState: string[];
  /** The unit was active before (a change restarts it). */
  active: boolean;
  access: TextfileAccess;
  /** The history directory is to be made (kept as it is when there: upgrades keep history). */
  makeHistoryDir: boolean;
}

export async function install(opts: InstallOptions, say: Say = console.log): Promise<void> {
  const booted = systemdBooted();
  if (!opts.dryRun) {
    requireRoot("install");
    if (!booted) throw new SystemError(notSystemdMessage(opts.backend));
  }
  const plan = await planInstall(opts, booted, say);
  if (opts.dryRun) return describePlan(plan, opts, say);
  if (
    plan.changed.length === 0 && plan.commands.length === 0 && !accessChanges(plan.access) &&
    !plan.makeHistoryDir
  ) {
    const fresh = await waitFresh(0, 3, say);
    say(
      `stb-netacct ${VERSION} is already installed and running (backend ` +
        `${fresh.backend}); nothing changed.`,
    );
    return;
  }
  const since = await applyPlan(plan, say);
  const fresh = await waitFresh(since, opts.timeout, say);
  say(
    `stb-netacct ${VERSION} is running with the ${fresh.backend} backend: ${fresh.path} was ` +
      `written ${fresh.age.toFixed(1)} s ago. Watch it with \`stb-netacct graph\`, check ` +
      `it with \`stb-netacct status\`.`,
  );
}

const accessChanges = (a: TextfileAccess) => a.createGroup || a.grant;

async function planInstall(opts: InstallOptions, booted: boolean, say: Say): Promise<InstallPlan> {
  const program = currentProgram();
  const configExists = exists(DEFAULT_CONFIG_PATH);
  const writeConfig = !configExists || opts.force;
  const configText = writeConfig ? defaultConfigJson(newConfigOwner(opts.owner)) : null;
  if (!writeConfig && opts.owner !== undefined) {
    say(
      `Keeping ${DEFAULT_CONFIG_PATH} as it is (--owner is only used for a new config): ` +
        `edit its "owner", or add --force to reset the file to the defaults`,
    );
  }
  const features = serviceFeatures(installedConfig(configText), DEFAULT_CONFIG_PATH);
  const access = planAccess(features.textfileDir);
  const files: PlannedFile[] = program.files.map((f) => plan(f, f.text !== undefined));
  files.push(...opts.docs.map((d) => plan({ path: d.path, mode: 0o644, text: d.text }, false)));
  if (configText !== null) {
    files.push(plan({ path: DEFAULT_CONFIG_PATH, mode: 0o644, text: configText }, true));
  }
  const unitText = renderUnit(opts.backend, BIN_PATH, {
    version: VERSION,
    configPath: DEFAULT_CONFIG_PATH,
    features: { ...features, textfileDir: access.dir },
  });
  // Kernel state the old unit's backends keep and the new one's never read (design.md).
  const oldBackend = readUnitBackend();
  const dropKernelState = oldBackend === null
    ? []
    : backendsOf(oldBackend).filter((b) => !backendsOf(opts.backend).includes(b));
  const unitFile = plan({ path: UNIT_PATH, mode: 0o644, text: unitText }, true);
  files.push(unitFile);
  const changed = files.filter((f) => f.state !== "unchanged");
  const makeHistoryDir = !exists(HISTORY_DIR);
  let state = new Map<string, string>();
  if (booted) state = await showUnit(UNIT_NAME).catch(() => new Map());
  const active = state.get("ActiveState") === "active";
  const enabled = state.get("UnitFileState") === "enabled";
  const commands: string[][] = [];
  if (unitFile.state !== "unchanged" || (state.get("NeedDaemonReload") ?? "no") === "yes") {
    commands.push(["daemon-reload"]);
  }
  if (!enabled) commands.push(["enable", UNIT_NAME]);
  const restart = changed.length > 0 || accessChanges(access) || makeHistoryDir;
  if (restart && active) commands.push(["restart", UNIT_NAME]);
  else if (!active) commands.push(["reset-failed", UNIT_NAME], ["start", UNIT_NAME]);
  return {
    booted,
    program,
    files,
    unitFile,
    changed,
    configText,
    configExists,
    commands,
    active,
    access,
    makeHistoryDir,
    dropKernelState,
  };
}

/** Says when the configured textfile directory is not there to be opened. */
function describeAccess(a: TextfileAccess, say: Say): void {
  if (a.absent) {
    say(
      `Note: ${a.absent} (the Prometheus textfile's directory) does not exist, so the ` +
        `service does not write the textfile; once prometheus-node-exporter is installed, ` +
        `run install again`,
    );
  }
}

/** --dry-run: every file (with its content) and every command, nothing done. */
function describePlan(p: InstallPlan, opts: InstallOptions, say: Say): void {
  say(`Dry run (${p.program.kind} build, backend ${opts.backend}); nothing is changed.`);
  for (const f of p.files) {
    const how = f.from ? `copy of ${f.from}` : `${f.data().length} bytes`;
    say(
      `${f.state === "unchanged" ? "keep " : "write"} ${f.path} (${f.state}, mode ` +
        `${f.mode.toString(8)}, ${how})`,
    );
    if (f.show && f.state !== "unchanged") {
      say(new TextDecoder().decode(f.data()).replace(/^/gm, "    | ").trimEnd());
    }
  }
  if (p.configExists && !opts.force) {
    say(`keep  ${DEFAULT_CONFIG_PATH} (exists; --force resets it)`);
  }
  if (p.access.createGroup) say(`run   groupadd --system ${TEXTFILE_GROUP}`);
  if (p.access.grant) say(`grant ${TEXTFILE_GROUP} write access to ${p.access.dir} (an ACL entry)`);
  describeAccess(p.access, say);
  say(`${p.makeHistoryDir ? "make " : "keep "} ${HISTORY_DIR}/ (traffic history)`);
  for (const c of p.commands) say(`run   systemctl ${c.join(" ")}`);
  say(`then  wait up to ${opts.timeout} s for a fresh ${RUNTIME_DIR}/counters.json`);
  if (!p.booted) say(`Note: ${notSystemdMessage(opts.backend)}`);
}

/** Writes what changed and runs the commands; returns when (Unix seconds) they ran. */
async function applyPlan(p: InstallPlan, say: Say): Promise<number> {
  const upgrading = p.files.some((f) => f.state === "changed");
  // Before the unit that names the group is written.
  if (p.access.dir !== null && accessChanges(p.access)) {
    const gid = p.access.createGroup ? await createTextfileGroup() : textfileGroupId();
    if (p.access.createGroup) say(`Created the system group ${TEXTFILE_GROUP}`);
    if (gid === null) {
      throw new SystemError(`The group ${TEXTFILE_GROUP} vanished: run install again`);
    }
    grantDirectory(p.access.dir, gid);
    say(`Gave ${TEXTFILE_GROUP} write access to ${p.access.dir} (the Prometheus textfile)`);
  }
  describeAccess(p.access, say);
  for (const f of p.changed) {
    installFile(f.path, f.data(), f.mode);
    say(`${f.state === "new" ? "Wrote" : "Updated"} ${f.path}`);
  }
  if (!p.configText) say(`Kept ${DEFAULT_CONFIG_PATH} (yours; --force resets it to the defaults)`);
  if (p.makeHistoryDir) {
    // Root's until the service takes it (history/files.ts); an existing one is left alone.
    Deno.mkdirSync(HISTORY_DIR, { mode: 0o755 });
    say(`Made ${HISTORY_DIR}/ for the traffic history`);
  }
  if (p.dropKernelState.length > 0) {
    // Stopped first: the old service keeps its state on the way out.
    if (p.active) await systemctl("stop", UNIT_NAME);
    await removeKernelStateOf(p.dropKernelState, say);
  }
  const since = Date.now() / 1000;
  for (const c of p.commands) {
    try {
      await systemctl(...c);
    } catch (e) {
      if (c[0] !== "start" && c[0] !== "restart") throw e;
      throw await notRunning(
        `${UNIT_NAME} did not start: ${(e as Error).message.replace(/\.$/, "")}`,
      );
    }
  }
  say(
    p.active && (p.changed.length > 0 || accessChanges(p.access) || p.makeHistoryDir)
      ? `Restarted ${UNIT_NAME} (${upgrading ? "upgraded" : "changed"})`
      : `Enabled and started ${UNIT_NAME}`,
  );
  return since;
}

/**
 * Polls counters.json until a sample newer than `since` (unix seconds) appears. Fails early
 * when the unit gave up, and always with the journal lines that say why.
 */
async function waitFresh(
  since: number,
  timeoutS: number,
  say: Say,
): Promise<{ backend: string; age: number; path: string }> {
  const config = loadConfig(DEFAULT_CONFIG_PATH, false);
  const path = config.output;
  const start = Date.now();
  let nextNote = 2000;
  let why = "no counters.json yet";
  const restarts0 = Number(
    (await showUnit(UNIT_NAME).catch(() => new Map())).get("NRestarts") ?? 0,
  );
  const reader = new CountersFileReader(path);
  while (Date.now() - start < timeoutS * 1000) {
    const r = await reader.read();
    if (r.kind === "ok") {
      const now = Date.now() / 1000;
      const age = now - r.counters.ts_unix;
      if (r.counters.ts_unix >= since && isFresh(r.counters, now)) {
        return { backend: r.counters.backend, age: Math.max(0, age), path };
      }
      why = `the newest sample is ${age.toFixed(1)} s old`;
    } else {
      why = r.reason;
    }
    const state = await showUnit(UNIT_NAME).catch(() => new Map<string, string>());
    if (state.get("ActiveState") === "failed") {
      why = `${UNIT_NAME} failed (${state.get("Result") ?? "unknown"})`;
      break;
    }
    const restarts = Number(state.get("NRestarts") ?? 0) - restarts0;
    if (restarts >= 2) {
      why = `${UNIT_NAME} exited and was restarted ${restarts} times`;
      break;
    }
    const elapsed = Date.now() - start;
    if (elapsed >= nextNote) {
      say(`Waiting for ${path} (${(elapsed / 1000).toFixed(0)} s; ${why})...`);
      nextNote += 3000;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw await notRunning(`${UNIT_NAME} is not publishing counters (${why})`);
}

/** What went wrong, with the unit's journal lines that say why and what to do next. */
async function notRunning(what: string): Promise<SystemError> {
  const journal = await journalTail(UNIT_NAME);
  return new SystemError(
    `${what}. Its last journal lines (journalctl -u stb-netacct -n 20):\n` +
      (journal.length ? journal.map((l) => `  ${l}`).join("\n") : "  (none)") +
      `\nFix what they name, then run install again; \`stb-netacct status\` shows the state.`,
  );
}

export function installCommand() {
  return new Command("install")
    .summary("install and start the counting service (root, systemd)")
    .description(
      `Install stb-netacct as the systemd service ${UNIT_NAME}: copy the program to\n` +
        `${BIN_PATH} (fallback builds also to ${LIB_ROOT}/), write\n` +
        `${DEFAULT_CONFIG_PATH} with the defaults unless it exists, write the hardened\n` +
        `unit ${UNIT_PATH}, enable and start it, and wait until\n` +
        `${RUNTIME_DIR}/counters.json is fresh. Running it again changes nothing when\n` +
        `everything is current, and upgrades and restarts the service when not.`,
    )
    .addOption(
      new Option("-b, --backend <name>", `how the service counts: ${BACKEND_CHOICES.join(", ")}`)
        .choices(BACKEND_CHOICES)
        .default(AUTO as BackendChoice),
    )
    .option(
      "--owner <user>",
      "owner of counters.json in a new config (default: $SUDO_USER, else root)",
    )
    .option("--dry-run", "print every file and command, change nothing", false)
    .option("--force", `reset ${DEFAULT_CONFIG_PATH} to the defaults`, false)
    .addOption(
      new Option("--timeout <seconds>", "how long to wait for fresh counters")
        .default(FRESH_TIMEOUT_S)
        .argParser((v) => {
          const n = Number(v);
          if (!Number.isFinite(n) || n < 1 || n > 600) {
            throw new UsageError(`--timeout ${JSON.stringify(v)}: use 1 to 600 seconds`);
          }
          return n;
        }),
    )
    .addHelpText(
      "after",
      "\nExamples:\n" +
        "  sudo ./stb-netacct install                      # after make build\n" +
        "  sudo ./stb-netacct install --backend nft --owner cad\n" +
        "  ./stb-netacct install --dry-run                 # what would happen\n" +
        "\nThe unit is made from the config: the Prometheus textfile's directory is\n" +
        "opened for it, /metrics may use a loopback socket (any address when the config\n" +
        'says "prometheus.allow_remote": true), and a config the confined service\n' +
        "could not honour is refused, naming the key and the fix. The man page and\n" +
        "bash, zsh and fish completions are installed with it.\n" +
        "\nWithout systemd as PID 1 it refuses and prints the `run` command to use instead.\n",
    )
    .action(async (opts, cmd) => {
      await install({
        backend: opts.backend,
        owner: opts.owner,
        dryRun: opts.dryRun,
        force: opts.force,
        timeout: opts.timeout,
        docs: documentationFiles(cmd),
      });
    });
}

/** The backend choice of the installed unit, null when there is none (or it names none). */
function readUnitBackend(): BackendChoice | null {
  try {
    const m = Deno.readTextFileSync(UNIT_PATH).match(/^ExecStart=.* --backend (\S+)/m)?.[1];
    return (BACKEND_CHOICES as readonly string[]).includes(m ?? "") ? m as BackendChoice : null;
  } catch {
    return null;
  }
}
