/**
 * `stb-netacct events`: who StB connected to, from the events.jsonl `run` publishes. Needs
 * no root: the file is readable by the configured owner (and root), not by everyone. Reads
 * only files: no FFI, never imports backends/.
 */

import { Command } from "@commander-js/extra-typings";
import { UsageError } from "../lib/errors.ts";
import type { ConnectEvent } from "./collector.ts";
import { DEFAULT_EVENTS_FILE, rotatedPath } from "./log.ts";

export interface EventsOptions {
  input: string;
  follow: boolean;
  json: boolean;
  externalOnly: boolean;
}

/** Parses one line of events.jsonl; null for anything that is not an event. */
export function parseEventLine(line: string): ConnectEvent | null {
  if (line.trim() === "") return null;
  let o: unknown;
  try {
    o = JSON.parse(line);
  } catch {
    return null;
  }
  if (typeof o !== "object" || o === null) return null;
  const e = o as Record<string, unknown>;
  if (
    typeof e.ts_unix !== "number" || typeof e.service !== "string" ||
    typeof e.address !== "string" || typeof e.port !== "number" ||
    typeof e.external !== "boolean"
  ) return null;
  return e as unknown as ConnectEvent;
}

/** One event as a line for people: time, service, what, where, who. */
export function formatEvent(e: ConnectEvent): string {
  const time = new Date(e.ts_unix * 1000).toISOString().replace("T", " ").replace("Z", "");
  const where = e.address.includes(":") ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
  const what = e.kind === "sendmsg" ? `${e.protocol} send` : `${e.protocol} connect`;
  return `${time} ${e.service} ${what} ${where} ${e.external ? "external" : "internal"} ` +
    `pid ${e.tgid}${e.pid !== e.tgid ? `/${e.pid}` : ""} (${e.comm})`;
}

function show(e: ConnectEvent, o: EventsOptions, write: (s: string) => void): void {
  if (o.externalOnly && !e.external) return;
  write(o.json ? JSON.stringify(e) : formatEvent(e));
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
  /** Polled while following: true ends it. */
  stopped?: () => boolean;
  /** How often a followed file is looked at. */
  pollMs?: number;
}

/**
 * Prints the events in the file (the rotated generation first), then with `follow` keeps
 * printing new ones, across rotations, until `stopped()` says so.
 */
export async function runEvents(o: EventsOptions, out: EventsOutput): Promise<void> {
  const { write, stopped = () => false, pollMs = 250 } = out;
  const emit = (line: string) => {
    const e = parseEventLine(line);
    if (e) show(e, o, write);
  };
  try {
    const old = await Deno.open(rotatedPath(o.input), { read: true });
    try {
      await readAll(old, new LineBuffer(), emit);
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
  let lines = new LineBuffer();
  try {
    await readAll(file, lines, emit);
    while (o.follow && !stopped()) {
      await new Promise((r) => setTimeout(r, pollMs));
      await readAll(file, lines, emit);
      // Rotated (a new file at the path): the old one is finished, read it to its end
      // above, then continue with the new one from its start.
      let now: Deno.FileInfo | null = null;
      try {
        now = await Deno.stat(o.input);
      } catch { /* between rename and create: look again next time */ }
      const mine = await file.stat();
      if (now !== null && now.ino !== mine.ino) {
        await readAll(file, lines, emit);
        file.close();
        file = await Deno.open(o.input, { read: true }).catch((e) => {
          throw readError(o.input, e);
        });
        lines = new LineBuffer();
        await readAll(file, lines, emit);
      }
    }
  } finally {
    file.close();
  }
}

export function eventsCommand() {
  return new Command("events")
    .summary("show whom StB connected to (connect and first-datagram events; no root needed)")
    .description(
      "Print the connect events that `stb-netacct run` records with the ebpf backend: every " +
        "outbound connect, and the first datagram of each unconnected UDP socket, made by a " +
        "process in StB's service cgroups (or below them): time, service, protocol, remote " +
        "address and port, external or internal (by the same exclusions as the counters), " +
        "process id and name. The file is readable by the configured owner and root only.",
    )
    .option("-f, --follow", "keep printing new events as they come (Ctrl-C to stop)")
    .option("--json", "one JSON object per line, as the file holds them")
    .option("-e, --external-only", "only events whose remote address counts as external")
    .option("--input <path>", "events file", DEFAULT_EVENTS_FILE)
    .addHelpText(
      "after",
      "\nExamples:\n" +
        "  stb-netacct events                      # everything recorded so far\n" +
        "  stb-netacct events --follow --external-only\n" +
        "  stb-netacct events --json | jq .address\n",
    )
    .action(async (opts) => {
      const options: EventsOptions = {
        input: opts.input,
        follow: opts.follow ?? false,
        json: opts.json ?? false,
        externalOnly: opts.externalOnly ?? false,
      };
      if (options.input.trim() === "") throw new UsageError("--input must name a file");
      let stop = false;
      const onSignal = () => stop = true;
      const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
      for (const s of signals) Deno.addSignalListener(s, onSignal);
      try {
        await runEvents(options, { write: (line) => console.log(line), stopped: () => stop });
      } catch (e) {
        if (e instanceof Deno.errors.BrokenPipe) return;
        throw e;
      } finally {
        for (const s of signals) Deno.removeSignalListener(s, onSignal);
      }
    });
}
