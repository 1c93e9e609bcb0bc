/**
 * A counters.json reader as graph or a monitoring script would be, run as its own process
 * so the test's own work never delays it: reads the file in a loop (every SLEEP_MS, 0 = as
 * fast as it can) and checks every read. Until SIGTERM, then prints one JSON summary line:
 *
 *   deno run --allow-read reader.ts PATH SLEEP_MS
 *
 * - invalid: reads that were not a whole valid v1 sample (partial or garbage JSON); the
 *   writer's atomic rename must make this zero. A missing file is counted apart (the test
 *   removes the directory on purpose).
 * - decreases: any total (or service total) lower than in an earlier sample, across
 *   restarts too: saved totals must carry over.
 * - samples: every distinct sample (by ts_monotonic) with its totals, for the test's
 *   gap and loss accounting.
 */

import { ContractError, parseCounters } from "../../lib/contract.ts";

function usage(): never {
  throw new Error("usage: reader.ts PATH [SLEEP_MS]");
}
const [path = usage(), sleepArg] = Deno.args;
const SLEEP_MS = Number(sleepArg ?? 0);

interface Seen {
  ts: number;
  unix: number;
  started: number;
  rx: number;
  tx: number;
}

let reads = 0, missing = 0, invalid = 0, firstInvalid: string | null = null;
const decreases: string[] = [];
const samples: Seen[] = [];
const maxSeen = new Map<string, bigint>();
let stop = false;
Deno.addSignalListener("SIGTERM", () => stop = true);

function check(key: string, v: bigint, ts: number): void {
  const prev = maxSeen.get(key) ?? 0n;
  if (v < prev && decreases.length < 20) decreases.push(`${key} ${prev} -> ${v} at ${ts}`);
  maxSeen.set(key, v > prev ? v : prev);
}

let lastTs = -1;
function readOnce(): void {
  reads++;
  let text: string | null = null;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) missing++;
    else {
      invalid++;
      firstInvalid ??= `read: ${(e as Error).message}`;
    }
  }
  if (text !== null) {
    try {
      const c = parseCounters(text);
      if (c.ts_monotonic !== lastTs) {
        lastTs = c.ts_monotonic;
        samples.push({
          ts: c.ts_monotonic,
          unix: c.ts_unix,
          started: c.started_at,
          rx: Number(c.rx_bytes_total),
          tx: Number(c.tx_bytes_total),
        });
        check("rx_bytes_total", c.rx_bytes_total, c.ts_monotonic);
        check("tx_bytes_total", c.tx_bytes_total, c.ts_monotonic);
        for (const [n, s] of Object.entries(c.services)) {
          check(`${n}.rx_bytes_total`, s.rx_bytes_total, c.ts_monotonic);
          check(`${n}.tx_bytes_total`, s.tx_bytes_total, c.ts_monotonic);
        }
      }
    } catch (e) {
      if (!(e instanceof ContractError)) throw e;
      invalid++;
      firstInvalid ??= `${e.message}: ${JSON.stringify(text.slice(0, 120))}`;
    }
  }
}

while (!stop) {
  // Tight mode reads in bursts; the timer between them lets the SIGTERM listener run.
  for (let i = 0; i < (SLEEP_MS === 0 ? 100 : 1); i++) readOnce();
  await new Promise((r) => setTimeout(r, SLEEP_MS));
}
console.log(JSON.stringify({ reads, missing, invalid, firstInvalid, decreases, samples }));
