/**
 * `stb-netacct events`: who StB connected to, from the events.jsonl `run` publishes. Needs
 * no root: the file is readable by the configured owner (and root), not by everyone. Reads
 * only files: no FFI, never imports backends/.
 */

import { Command } from "@commander-js/extra-typings";
import { UsageError } from "../lib/errors.ts";
import { printable, terminalJson } from "../lib/text.ts";
import { isoTime, isUnixTime } from "../lib/time.ts";
import type { ConnectEvent } from "./collector.ts";
import { EVENTS_FILE_NAME, rotatedPath } from "./log.ts";
import { asCount, parseExact, stringifyExact } from "../lib/exact_json.ts";
import { EBPF_PROGRAMS, type EventLine, isLifecycle, type LifecycleEvent } from "./lifecycle.ts";
import { COUNTERS_DIR } from "../lib/contract.ts";
import { isHostName } from "../names/dns.ts";
import { type PtrResolver, ReverseNames } from "../names/reverse.ts";

const DEFAULT_EVENTS_FILE = `${COUNTERS_DIR}/${EVENTS_FILE_NAME}`;

export interface EventsOptions {
  input: string;
  follow: boolean;
  json: boolean;
  externalOnly: boolean;
  /** Times in UTC instead of local time. */
  utc?: boolean;
  /**
   * Reverse DNS (PTR) for addresses `run` gave no name, shown in the lines for people
   * (not in --json); only when true (the command sets it unless -n/--no-resolve).
   */
  resolve?: boolean;
}

/** How long printing waits for reverse lookups, at most, before it shows addresses. */
const RESOLVE_WAIT_MS = 1500;

/** One line of events.jsonl: an event (a connect or a lifecycle line), or why it is not one. */
export type ParsedLine = { event: EventLine } | { invalid: string };

const MAX_U32 = 4294967295;

function describe(v: unknown): string {
  if (v === undefined) return "missing";
  // parseExact gives a bigint for an integer past 2^53, which JSON.stringify refuses.
  const text = typeof v === "number" || typeof v === "bigint"
    ? String(v)
    : stringifyExact(v) ?? String(v);
  return `${text.length > 40 ? `${text.slice(0, 40)}…` : text}`;
}

/** An integer from 0 to `max`. */
const intTo = (max: number) => (v: unknown) =>
  typeof v === "number" && Number.isSafeInteger(v) && v >= 0 && v <= max;
/** A string of `min` to `max` characters. */
const textOf = (min: number, max: number) => (v: unknown) =>
  typeof v === "string" && v.length >= min && v.length <= max;

/** Each field of an event and the test its value must pass, in the order they print. */
const FIELDS: [keyof ConnectEvent, string, (v: unknown) => boolean][] = [
  ["ts_unix", "a Unix time", isUnixTime],
  ["ts_monotonic", "a number of seconds", (v) => typeof v === "number" && v >= 0 && v < 1e12],
  ["kind", '"connect" or "sendmsg"', (v) => v === "connect" || v === "sendmsg"],
  ["service", "a name", textOf(1, 256)],
  ["pid", "a process id", intTo(MAX_U32)],
  ["tgid", "a process id", intTo(MAX_U32)],
  ["comm", "a process name", textOf(0, 64)],
  ["family", "4 or 6", (v) => v === 4 || v === 6],
  ["protocol", "a protocol name", textOf(1, 16)],
  ["address", "an IP address", (v) => typeof v === "string" && /^[0-9A-Fa-f:.]{2,45}$/.test(v)],
  ["port", "a port", intTo(65535)],
  ["external", "true or false", (v) => typeof v === "boolean"],
];

/** Fields a connect event may lack (files written before they existed). */
const OPTIONAL_FIELDS: [keyof ConnectEvent, string, (v: unknown) => boolean][] = [
  ["cookie", "a socket cookie (an integer from 0 to 2^64 - 1)", (v) => asCount(v) !== null],
  ["name", "a DNS name", (v) => typeof v === "string" && isHostName(v)],
];

const TIMES: [string, string, (v: unknown) => boolean][] = FIELDS.slice(0, 2);
const programsOk = (v: unknown) => EBPF_PROGRAMS.includes(v as never);
const PROGRAMS_TEXT = EBPF_PROGRAMS.map((p) => `"${p}"`).join(" or ");

/** The fields of each lifecycle line (events/lifecycle.ts), in the order they print. */
const LIFECYCLE_FIELDS: Record<
  LifecycleEvent["kind"],
  [string, string, (v: unknown) => boolean][]
> = {
  ebpf_attached: [
    ...TIMES,
    ["kind", '"ebpf_attached"', (v) => v === "ebpf_attached"],
    ["programs", PROGRAMS_TEXT, programsOk],
    [
      "services",
      "a list of service names",
      (v) => Array.isArray(v) && v.length <= 1024 && v.every(textOf(1, 256)),
    ],
  ],
  ebpf_unavailable: [
    ...TIMES,
    ["kind", '"ebpf_unavailable"', (v) => v === "ebpf_unavailable"],
    ["programs", PROGRAMS_TEXT, programsOk],
    ["backend", "a backend name", textOf(1, 32)],
    ["reason", "a reason", textOf(1, 4000)],
  ],
};

/**
 * Parses one line of events.jsonl: the event with exactly the known fields, or the first
 * field that is wrong; null for an empty line. Nothing half-valid is ever returned.
 */
export function parseEventLine(line: string): ParsedLine | null {
  if (line.trim() === "") return null;
  let o: unknown;
  try {
    o = parseExact(line);
  } catch {
    return { invalid: "it is not JSON" };
  }
  if (typeof o !== "object" || o === null || Array.isArray(o)) {
    return { invalid: "it is not a JSON object" };
  }
  const e = o as Record<string, unknown>;
  const event: Record<string, unknown> = {};
  const lifecycle = e.kind === "ebpf_attached" || e.kind === "ebpf_unavailable";
  const fields = lifecycle ? LIFECYCLE_FIELDS[e.kind as LifecycleEvent["kind"]] : FIELDS;
  for (const [key, what, ok] of fields) {
    if (!ok(e[key])) return { invalid: `"${key}" is ${describe(e[key])}, not ${what}` };
    event[key] = e[key];
  }
  if (!lifecycle) {
    for (const [key, what, ok] of OPTIONAL_FIELDS) {
      if (e[key] === undefined) continue;
      if (!ok(e[key])) return { invalid: `"${key}" is ${describe(e[key])}, not ${what}` };
      event[key] = key === "cookie" ? asCount(e[key]) : e[key];
    }
  }
  return { event: event as unknown as EventLine };
}

/**
 * One event as a line for people: time, service, what, where (the name first when known:
 * the one `run` saw StB resolve, else `reverse`'s), who (made printable).
 */
export function formatEvent(e: EventLine, utc = false, reverse?: string): string {
  const time = isoTime(e.ts_unix, { utc, ms: true });
  if (isLifecycle(e)) return printable(`${time} ${formatLifecycle(e)}`);
  const name = e.name ?? reverse;
  const where = (name ? `${name} ` : "") +
    (e.address.includes(":") ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`);
  const what = e.kind === "sendmsg" ? `${e.protocol} send` : `${e.protocol} connect`;
  return printable(
    `${time} ${e.service} ${what} ${where} ${e.external ? "external" : "internal"} ` +
      `pid ${e.tgid}${e.pid !== e.tgid ? `/${e.pid}` : ""} (${e.comm})` +
      (e.cookie === undefined ? "" : ` cookie ${e.cookie}`),
  );
}

const PROGRAM_NAMES = { counting: "counting programs", events: "connect-event programs" };

function formatLifecycle(e: LifecycleEvent): string {
  if (e.kind === "ebpf_attached") {
    const at = e.services.length === 0 ? "no service cgroup yet" : e.services.join(", ");
    return `ebpf ${PROGRAM_NAMES[e.programs]} attached (${at})`;
  }
  const instead = e.programs === "counting" ? `counting with ${e.backend}` : "no connect events";
  return `ebpf ${PROGRAM_NAMES[e.programs]} unavailable, ${instead}: ${e.reason}`;
}

/** --external-only: connect events to external remotes; lifecycle lines are no connections. */
function show(
  e: EventLine,
  o: EventsOptions,
  out: { write: (s: string) => void; reverse: ReverseNames | null },
): void {
  if (o.externalOnly && (isLifecycle(e) || !e.external)) return;
  if (o.json) return out.write(terminalJson(stringifyExact(e)));
  const reverse = !isLifecycle(e) && e.name === undefined
    ? out.reverse?.lookup(e.address)
    : undefined;
  out.write(formatEvent(e, o.utc ?? false, reverse));
}

/** Lines that were not events: how many, and where the first one was and why. */
export interface Skipped {
  count: number;
  first: string | null;
}

function readError(path: string, e: unknown): Error {
  if (e instanceof Deno.errors.PermissionDenied) {
    return new Error(
      `Cannot read "${path}": permission denied. Events are readable by the user named by ` +
        `"owner" in the config (and root): run this as that user, or with sudo`,
      { cause: e },
    );
  }
  if (e instanceof Deno.errors.NotFound) {
    return new Error(
      `"${path}" does not exist: is \`stb-netacct run\` running with the ebpf backend and ` +
        `events on (its log says why not)? Or point --input at the file`,
      { cause: e },
    );
  }
  return new Error(`Cannot read "${path}": ${(e as Error).message}`, { cause: e });
}

/** Splits complete lines off `buffer`; the unfinished rest stays for the next read. */
class LineBuffer {
  #rest = "";
  #decoder = new TextDecoder();
  push(bytes: Uint8Array): string[] {
    const text = this.#rest + this.#decoder.decode(bytes, { stream: true });
    const lines = text.split("\n");
    this.#rest = lines.pop() ?? "";
    return lines;
  }
}

async function readAll(file: Deno.FsFile, lines: LineBuffer, out: (l: string) => void) {
  const buf = new Uint8Array(64 * 1024);
  for (;;) {
    const n = await file.read(buf);
    if (n === null || n === 0) return;
    for (const l of lines.push(buf.subarray(0, n))) out(l);
  }
}

/** Where `runEvents` prints, and until when it follows. */
export interface EventsOutput {
  write: (line: string) => void;
  /** Told about each line that is not an event, as it is skipped. */
  skipped?: (where: string, why: string) => void;
  /** Polled while following: true ends it. */
  stopped?: () => boolean;
  /** How often a followed file is looked at. */
  pollMs?: number;
  /** The PTR lookup for `resolve` (default: the system's resolver). */
  ptr?: PtrResolver;
}

/** Parses and prints the lines of one file, counting the ones that are not events. */
class Emitter {
  readonly skipped: Skipped = { count: 0, first: null };
  #file = "";
  #line = 0;
  /** Events read and not printed yet: printed by `flush`, after their names are looked up. */
  #batch: EventLine[] = [];
  readonly #reverse: ReverseNames | null;
  constructor(readonly o: EventsOptions, readonly out: EventsOutput) {
    this.#reverse = o.resolve === true && !o.json ? new ReverseNames(out.ptr) : null;
  }

  /** Prints what was read; with reverse DNS, after a bounded wait for the names. */
  async flush(): Promise<void> {
    const batch = this.#batch;
    this.#batch = [];
    if (this.#reverse && batch.length > 0) {
      for (const e of batch) {
        if (!isLifecycle(e) && e.name === undefined) this.#reverse.lookup(e.address);
      }
      await this.#reverse.settle(RESOLVE_WAIT_MS);
    }
    for (const e of batch) show(e, this.o, { write: this.out.write, reverse: this.#reverse });
  }

  /** The lines that follow are from `file`, from its first line. */
  begin(file: string): void {
    this.#file = file;
    this.#line = 0;
  }

  emit(line: string): void {
    this.#line++;
    const parsed = parseEventLine(line);
    if (parsed === null) return;
    if ("event" in parsed) {
      this.#batch.push(parsed.event);
      return;
    }
    const where = `${this.#file} line ${this.#line}`;
    this.skipped.count++;
    this.skipped.first ??= `${where}: ${parsed.invalid}`;
    this.out.skipped?.(where, parsed.invalid);
  }
}

/**
 * Prints the events in the file (the rotated generation first), then with `follow` keeps
 * printing new ones, across rotations, until `stopped()` says so. Returns the lines that
 * were not events (never printed).
 */
export async function runEvents(o: EventsOptions, out: EventsOutput): Promise<Skipped> {
  const { stopped = () => false, pollMs = 250 } = out;
  const emitter = new Emitter(o, out);
  const emit = (line: string) => emitter.emit(line);
  try {
    const old = await Deno.open(rotatedPath(o.input), { read: true });
    emitter.begin(rotatedPath(o.input));
    try {
      await readAll(old, new LineBuffer(), emit);
      await emitter.flush();
    } finally {
      old.close();
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw readError(rotatedPath(o.input), e);
  }
  let file: Deno.FsFile;
  try {
    file = await Deno.open(o.input, { read: true });
  } catch (e) {
    throw readError(o.input, e);
  }
  emitter.begin(o.input);
  let lines = new LineBuffer();
  try {
    await readAll(file, lines, emit);
    await emitter.flush();
    while (o.follow && !stopped()) {
      await new Promise((r) => setTimeout(r, pollMs));
      await readAll(file, lines, emit);
      await emitter.flush();
      // Rotated (a new file at the path): the old one is finished, read it to its end
      // above, then continue with the new one from its start.
      let now: Deno.FileInfo | null = null;
      try {
        now = await Deno.stat(o.input);
      } catch { /* between rename and create: look again next time */ }
      const mine = await file.stat();
      if (now !== null && now.ino !== mine.ino) {
        await readAll(file, lines, emit);
        await emitter.flush();
        file.close();
        file = await Deno.open(o.input, { read: true }).catch((e) => {
          throw readError(o.input, e);
        });
        emitter.begin(o.input);
        lines = new LineBuffer();
        await readAll(file, lines, emit);
        await emitter.flush();
      }
    }
  } finally {
    file.close();
  }
  return emitter.skipped;
}

/** The stderr line about lines that were not events; null when there were none. */
export function skippedReport(s: Skipped): string | null {
  if (s.count === 0) return null;
  return printable(
    `stb-netacct events: skipped ${s.count} ${s.count === 1 ? "line that is" : "lines that are"} ` +
      `not a valid event (first: ${s.first}); the file may be damaged or not written by ` +
      "`stb-netacct run`",
  );
}

export function eventsCommand() {
  return new Command("events")
    .summary("show whom StB connected to (connect and first-datagram events; no root needed)")
    .description(
      "Print the connect events that `stb-netacct run` records with the ebpf backend: every " +
        "outbound connect, and the first datagram of each unconnected UDP socket, made by a " +
        "process in StB's service cgroups (or below them): time (local, ISO 8601 with the " +
        "zone offset), service, protocol, remote " +
        "address and port, external or internal (by the same exclusions as the counters), " +
        "process id and name, and the socket's cookie (the kernel's SO_COOKIE: one socket's " +
        "events share it). Each run also records at its start whether its eBPF programs " +
        "(counting, connect events) were attached, or why they could not be (a missing " +
        "capability, another backend, a refused program). " +
        "The file is readable by the configured owner and root only. " +
        "Lines that are not valid events are never printed: how many were skipped, and why " +
        "the first was, goes to stderr.",
    )
    .option("-f, --follow", "keep printing new events as they come (Ctrl-C to stop)")
    .option("--json", "one JSON object per line, with the fields the file holds")
    .option(
      "-e, --external-only",
      "only connects whose remote address counts as external (no attach lines)",
    )
    .option("--utc", "times in UTC (default: local time with its offset, ISO 8601)")
    .option(
      "-n, --no-resolve",
      "no reverse DNS: show the name `run` saw StB resolve, or the bare address (by " +
        "default an address without one is looked up (PTR), waiting at most 1.5 s)",
    )
    .option("--input <path>", "events file", DEFAULT_EVENTS_FILE)
    .addHelpText(
      "after",
      "\nExamples:\n" +
        "  stb-netacct events                      # everything recorded so far\n" +
        "  stb-netacct events --follow --external-only\n" +
        "  stb-netacct events --utc --json | jq 'select(.address) | .address'\n",
    )
    .action(async (opts) => {
      const options: EventsOptions = {
        input: opts.input,
        follow: opts.follow ?? false,
        json: opts.json ?? false,
        externalOnly: opts.externalOnly ?? false,
        utc: opts.utc ?? false,
        resolve: opts.resolve,
      };
      if (options.input.trim() === "") throw new UsageError("--input must name a file");
      let stop = false;
      const onSignal = () => stop = true;
      const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
      for (const s of signals) Deno.addSignalListener(s, onSignal);
      let skipped: Skipped = { count: 0, first: null };
      try {
        skipped = await runEvents(options, {
          write: (line) => console.log(line),
          // Following can last for days: say so as it happens, not only at the end.
          skipped: options.follow
            ? (where, why) =>
              console.error(printable(`stb-netacct events: skipped ${where}: ${why}`))
            : undefined,
          stopped: () => stop,
        });
      } catch (e) {
        if (e instanceof Deno.errors.BrokenPipe) return;
        throw e;
      } finally {
        for (const s of signals) Deno.removeSignalListener(s, onSignal);
      }
      const report = skippedReport(skipped);
      if (report !== null) console.error(report);
    });
}
