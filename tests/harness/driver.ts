/**
 * The test's end of backend_driver.ts: one JSON request per line, one reply per line.
 * Made by `Lab.startDriver`, which runs the driver in the lab's client netns.
 */

import { endProcess } from "./exec.ts";

/** Fields of a backend's readings: exact counts (bigint), as the backend returned them. */
const COUNT_FIELDS = new Set(["rxBytes", "txBytes", "rxPackets", "txPackets", "bytes", "packets"]);

/** JSON.parse that gives the count fields back as bigint, every digit kept. */
function parseReply(text: string): { ok: boolean; error?: string; result?: unknown } {
  return JSON.parse(
    text,
    (key, value, context?: { source?: string }) =>
      COUNT_FIELDS.has(key) && typeof value === "number" && context?.source !== undefined
        ? BigInt(context.source)
        : value,
  );
}

export class Driver {
  #reader: ReadableStreamDefaultReader<string>;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #buffered = "";

  constructor(readonly child: Deno.ChildProcess) {
    this.#reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    this.#writer = child.stdin.getWriter();
  }

  async request<T = unknown>(req: Record<string, unknown>): Promise<T> {
    await this.#writer.write(new TextEncoder().encode(JSON.stringify(req) + "\n"));
    while (!this.#buffered.includes("\n")) {
      const { value, done } = await this.#reader.read();
      if (done) throw new Error(`driver exited while answering ${JSON.stringify(req)}`);
      this.#buffered += value;
    }
    const nl = this.#buffered.indexOf("\n");
    const reply = parseReply(this.#buffered.slice(0, nl));
    this.#buffered = this.#buffered.slice(nl + 1);
    if (!reply.ok) throw new Error(`driver ${req.op}: ${reply.error}`);
    return reply.result as T;
  }

  async close(): Promise<void> {
    try {
      await this.#writer.close();
    } catch { /* already gone */ }
    // Closing stdin asks the driver to stop; a stuck one is killed.
    await endProcess(this.child, 5000, null);
    await this.#reader.cancel().catch(() => {});
  }
}
