import { assertEquals, assertThrows } from "./test_assert.ts";
import { stringifyExact } from "./exact_json.ts";
import {
  ContractError,
  CountersFileReader,
  type CountersV1,
  isFresh,
  parseCounters,
  pendingStuckOpens,
  type ReadResult,
  serializeCounters,
  staleAfterS,
} from "./contract.ts";

const sample: CountersV1 = {
  schema: 1,
  backend: "ebpf",
  boot_id: "6f1c0a52-0000-4000-8000-000000000000",
  started_at: 1795000000,
  rx_bytes_total: 123n,
  tx_bytes_total: 456n,
  rx_packets_total: 7n,
  tx_packets_total: 8n,
  ts_monotonic: 12345.67,
  ts_unix: 1795000000.12,
  interval_s: 0.5,
  services: {
    server: {
      rx_bytes_total: 1n,
      tx_bytes_total: 2n,
      rx_packets_total: 0n,
      tx_packets_total: 0n,
      cgroup: "/user.slice/x",
      present: true,
    },
  },
};

Deno.test("serialise then parse is the identity, one line", () => {
  const text = serializeCounters(sample);
  assertEquals(text.endsWith("\n") && !text.slice(0, -1).includes("\n"), true);
  assertEquals(parseCounters(text), sample);
});

Deno.test("counts keep every digit up to 2^64 - 1, in and out", () => {
  const max = (1n << 64n) - 1n;
  const text = GOOD.replace("1000", String(max)).replace("2000", "9007199254740993");
  const c = parseCounters(text);
  assertEquals([c.rx_bytes_total, c.tx_bytes_total], [max, 9007199254740993n]);
  // Written back as plain JSON integers (no quotes, no exponent), digit for digit.
  const out = serializeCounters({ ...c, rx_bytes_total: c.rx_bytes_total + 1n - 1n });
  assertEquals(out.includes(`"rx_bytes_total":${max},`), true, out);
  assertEquals(parseCounters(out).rx_bytes_total, max);
  // One byte added to a total beyond 2^53 is not lost.
  const plusOne = serializeCounters({ ...c, tx_bytes_total: c.tx_bytes_total + 1n });
  assertEquals(parseCounters(plusOne).tx_bytes_total, 9007199254740994n);
});

Deno.test("the original three-field contract is still accepted", () => {
  const c = parseCounters('{"rx_bytes_total": 1, "tx_bytes_total": 2, "ts_monotonic": 3.5}');
  assertEquals([c.rx_bytes_total, c.tx_bytes_total, c.ts_monotonic, c.backend], [
    1n,
    2n,
    3.5,
    "unknown",
  ]);
});

Deno.test("bad files are refused with the field named", () => {
  const cases: [string, string][] = [
    ["", "empty"],
    ["{", "not valid JSON"],
    ["[1]", "not a JSON object"],
    ["null", "not a JSON object"],
    ['{"schema": 2, "rx_bytes_total": 1, "tx_bytes_total": 1, "ts_monotonic": 1}', "schema 2"],
    ['{"rx_bytes_total": -1, "tx_bytes_total": 1, "ts_monotonic": 1}', '"rx_bytes_total" is -1'],
    ['{"rx_bytes_total": 1.5, "tx_bytes_total": 1, "ts_monotonic": 1}', '"rx_bytes_total" is 1.5'],
    ['{"rx_bytes_total": "1", "tx_bytes_total": 1, "ts_monotonic": 1}', '"rx_bytes_total" is "1"'],
    [
      '{"rx_bytes_total": 1, "tx_bytes_total": 1e400, "ts_monotonic": 1}',
      '"tx_bytes_total" is Infinity',
    ],
    ['{"rx_bytes_total": 1, "tx_bytes_total": 1}', '"ts_monotonic" is missing'],
    ["[".repeat(100000), "not valid JSON"],
  ];
  for (const [text, want] of cases) assertThrows(() => parseCounters(text), ContractError, want);
  assertThrows(() => parseCounters(" ".repeat((1 << 20) + 1)), ContractError, "over the");
});

Deno.test("schema file lists exactly the fields the serialiser writes", () => {
  const schema = JSON.parse(
    Deno.readTextFileSync(new URL("../schema/counters.schema.json", import.meta.url)),
  );
  assertEquals(
    Object.keys(schema.properties).sort(),
    // The optional fields too: destinations and events_dropped_total (ebpf only).
    [
      ...Object.keys(sample),
      "backend_fallback_reason",
      "destinations",
      "ebpf_attach_failures_total",
      "events_dropped_total",
      "history",
      "names",
    ].sort(),
  );
  assertEquals(
    Object.keys(schema.properties.services.additionalProperties.properties).sort(),
    Object.keys(sample.services.server ?? {}).sort(),
  );
});

Deno.test("freshness: stale after three intervals, never sooner than 2 s", () => {
  assertEquals([0.1, 0.5, 1, 10].map(staleAfterS), [2, 2, 3, 30]);
  const at = (age: number, interval_s = 0.5) =>
    isFresh({ ...sample, ts_unix: 1000, interval_s }, 1000 + age);
  assertEquals([at(2), at(2.01), at(2.9, 1), at(3.1, 1)], [true, false, true, false]);
  assertEquals(isFresh({ ...sample, ts_unix: 0 }, 1000), false, "no ts_unix: age unknown");
});

const GOOD = JSON.stringify({
  schema: 1,
  backend: "ebpf",
  rx_bytes_total: 1000,
  tx_bytes_total: 2000,
  rx_packets_total: 3,
  tx_packets_total: 4,
  ts_monotonic: 123.5,
  ts_unix: 1795000000.5,
  interval_s: 0.5,
  services: {},
}) + "\n";

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "stb-graph-reader-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Fails instead of hanging the suite if a read ever blocks. */
async function readWithin(reader: CountersFileReader, ms = 3000): Promise<ReadResult> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`read of ${reader.path} hung`)), ms);
  });
  try {
    return await Promise.race([reader.read(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function expectKind(r: ReadResult, kind: ReadResult["kind"], reasonPart?: RegExp): void {
  if (r.kind !== kind) throw new Error(`expected ${kind}, got ${stringifyExact(r)}`);
  if (reasonPart && (r.kind === "ok" || !reasonPart.test(r.reason))) {
    throw new Error(`reason does not match ${reasonPart}: ${JSON.stringify(r)}`);
  }
}

async function mkfifo(path: string): Promise<void> {
  const out = await new Deno.Command("mkfifo", { args: [path] }).output();
  if (!out.success) throw new Error(`mkfifo failed: ${new TextDecoder().decode(out.stderr)}`);
}

Deno.test("a good file reads ok, and an unchanged file is not read again", async () => {
  await withTempDir(async (dir) => {
    const p = `${dir}/counters.json`;
    await Deno.writeTextFile(p, GOOD);
    const r = new CountersFileReader(p);
    const first = await readWithin(r);
    expectKind(first, "ok");
    if (first.kind === "ok" && (first.counters.rx_bytes_total !== 1000n || !first.changed)) {
      throw new Error(JSON.stringify(first));
    }
    const second = await readWithin(r);
    if (second.kind !== "ok" || second.changed) throw new Error(JSON.stringify(second));
    if (r.contentReads !== 1) throw new Error(`content read ${r.contentReads} times`);
    // An atomic replace (new inode) is noticed even with the same size.
    await Deno.writeTextFile(`${p}.tmp`, GOOD.replace("1000", "1001"));
    await Deno.rename(`${p}.tmp`, p);
    const third = await readWithin(r);
    if (third.kind !== "ok" || !third.changed || third.counters.rx_bytes_total !== 1001n) {
      throw new Error(JSON.stringify(third));
    }
    if ((r.contentReads as number) !== 2) throw new Error(`content read ${r.contentReads} times`);
  });
});

Deno.test("a missing file says how to start the sampler", async () => {
  await withTempDir(async (dir) => {
    expectKind(
      await readWithin(new CountersFileReader(`${dir}/nope.json`)),
      "missing",
      /does not exist yet.*stb-netacct run/,
    );
  });
});

const badContents: [string, string | Uint8Array, RegExp][] = [
  ["empty", "", /empty/],
  ["truncated", GOOD.slice(0, GOOD.length / 2), /not valid JSON/],
  ["garbage", "\x00\x01garbage!!", /not valid JSON/],
  ["not UTF-8", new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), /not UTF-8/],
  ["an array", "[1,2,3]", /not a JSON object/],
  ["deeply nested", "[".repeat(400_000) + "]".repeat(400_000), /not a JSON object/],
  [
    "deeply nested object",
    '{"rx_bytes_total":' + '{"a":'.repeat(100_000) + "1" + "}".repeat(100_000) + "}",
    /"rx_bytes_total" is/,
  ],
  ["wrong type", GOOD.replace("1000", '"1000"'), /"rx_bytes_total" is "1000"/],
  ["negative", GOOD.replace("2000", "-5"), /"tx_bytes_total" is -5/],
  ["fractional", GOOD.replace("2000", "20.5"), /"tx_bytes_total" is 20.5/],
  ["NaN literal", GOOD.replace("2000", "NaN"), /not valid JSON/],
  ["overflowing number", GOOD.replace("2000", "1e999"), /"tx_bytes_total" is Infinity/],
  ["beyond 2^64 - 1", GOOD.replace("2000", "18446744073709551616"), /"tx_bytes_total" is/],
  ["a fraction", GOOD.replace("2000", "2000.5"), /"tx_bytes_total" is 2000.5/],
  ["null timestamp", GOOD.replace("123.5", "null"), /"ts_monotonic" is null/],
  ["negative timestamp", GOOD.replace("123.5", "-1"), /"ts_monotonic" is -1/],
  ["future schema", GOOD.replace('"schema":1', '"schema":2'), /schema 2 is not supported/],
];

for (const [name, content, reason] of badContents) {
  Deno.test(`malformed content (${name}) gives a reason, never a throw`, async () => {
    await withTempDir(async (dir) => {
      const p = `${dir}/counters.json`;
      if (typeof content === "string") await Deno.writeTextFile(p, content);
      else await Deno.writeFile(p, content);
      expectKind(await readWithin(new CountersFileReader(p)), "malformed", reason);
    });
  });
}

Deno.test("a huge (sparse 4 GiB) file is refused from stat, without reading it", async () => {
  await withTempDir(async (dir) => {
    const p = `${dir}/counters.json`;
    await Deno.writeTextFile(p, "");
    await Deno.truncate(p, 4 * 1024 ** 3);
    const r = new CountersFileReader(p);
    const t0 = performance.now();
    expectKind(await readWithin(r), "malformed", /4294967296 bytes, over the 1048576-byte limit/);
    if (r.contentReads !== 0) throw new Error("the huge file was opened and read");
    if (performance.now() - t0 > 500) throw new Error("refusing took too long");
  });
});

Deno.test("just over the limit is refused, exactly at the limit is parsed", async () => {
  await withTempDir(async (dir) => {
    const p = `${dir}/counters.json`;
    const body = GOOD.trimEnd();
    await Deno.writeTextFile(p, body + " ".repeat(300 - body.length) + " ");
    expectKind(await readWithin(new CountersFileReader(p, 300)), "malformed", /301 bytes/);
    await Deno.writeTextFile(p, body + " ".repeat(300 - body.length));
    expectKind(await readWithin(new CountersFileReader(p, 300)), "ok");
  });
});

Deno.test("a file larger than its stat size (like /proc) is cut at the limit", async () => {
  // /proc files stat as 0 bytes: only the read loop's own limit protects here.
  const r = new CountersFileReader("/proc/self/mountinfo", 64);
  expectKind(await readWithin(r), "malformed", /grew past the 64-byte limit/);
});

Deno.test("a directory in place of the file is reported, not read", async () => {
  await withTempDir(async (dir) => {
    const p = `${dir}/counters.json`;
    await Deno.mkdir(p);
    expectKind(await readWithin(new CountersFileReader(p)), "malformed", /is a directory/);
  });
});

Deno.test("a FIFO in place of the file never blocks the reader", async () => {
  await withTempDir(async (dir) => {
    const p = `${dir}/counters.json`;
    await mkfifo(p);
    const r = new CountersFileReader(p);
    expectKind(await readWithin(r, 2000), "malformed", /is a FIFO/);
    expectKind(await readWithin(r, 2000), "malformed", /is a FIFO/);
    // Through a symlink too.
    await Deno.symlink(p, `${dir}/link.json`);
    expectKind(
      await readWithin(new CountersFileReader(`${dir}/link.json`), 2000),
      "malformed",
      /FIFO/,
    );
  });
});

Deno.test("a socket in place of the file is reported", async () => {
  await withTempDir(async (dir) => {
    const p = `${dir}/counters.json`;
    const listener = Deno.listen({ transport: "unix", path: p });
    try {
      expectKind(await readWithin(new CountersFileReader(p)), "malformed", /is a socket/);
    } finally {
      listener.close();
    }
  });
});

Deno.test("a dangling symlink reads as missing", async () => {
  await withTempDir(async (dir) => {
    const p = `${dir}/counters.json`;
    await Deno.symlink(`${dir}/gone`, p);
    expectKind(await readWithin(new CountersFileReader(p)), "missing");
  });
});

Deno.test("a bad file that stays bad is not re-parsed every tick, and recovery is seen", async () => {
  await withTempDir(async (dir) => {
    const p = `${dir}/counters.json`;
    await Deno.writeTextFile(p, "{garbage");
    const r = new CountersFileReader(p);
    expectKind(await readWithin(r), "malformed");
    expectKind(await readWithin(r), "malformed");
    if (r.contentReads !== 1) throw new Error(`garbage read ${r.contentReads} times`);
    await Deno.writeTextFile(`${p}.tmp`, GOOD);
    await Deno.rename(`${p}.tmp`, p);
    expectKind(await readWithin(r), "ok");
  });
});

Deno.test("a path flipping between a file and a FIFO never hangs the reader", async () => {
  await withTempDir(async (dir) => {
    const p = `${dir}/counters.json`;
    await Deno.writeTextFile(`${dir}/file`, GOOD);
    await mkfifo(`${dir}/fifo`);
    await Deno.writeTextFile(p, GOOD);
    // A separate process swaps the path as fast as it can, so the swap can land between
    // the reader's stat and its open.
    const swapper = new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `const d = ${JSON.stringify(dir)};
         for (let i = 0; ; i++) {
           const src = i % 2 ? d + "/fifo" : d + "/file";
           Deno.linkSync(src, d + "/tmp");
           Deno.renameSync(d + "/tmp", d + "/counters.json");
         }`,
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    const r = new CountersFileReader(p);
    const seen = { ok: 0, fifo: 0, blocked: 0, other: 0 };
    try {
      const until = performance.now() + 2500;
      while (performance.now() < until) {
        const res = await readWithin(r, 2500);
        if (res.kind === "ok") seen.ok++;
        else if (/FIFO|not a regular file/.test(res.reason)) {
          if (/blocked|never returned/.test(res.reason)) seen.blocked++;
          else seen.fifo++;
        } else seen.other++;
      }
    } finally {
      swapper.kill("SIGKILL");
      await swapper.status;
      // Wake any open parked on the FIFO: opening it read-write never blocks on Linux and
      // gives the parked reader its writer.
      for (let i = 0; i < 50 && pendingStuckOpens() > 0; i++) {
        try {
          const w = await Deno.open(`${dir}/fifo`, { read: true, write: true });
          await new Promise((res) => setTimeout(res, 20));
          w.close();
        } catch { /* already gone */ }
      }
    }
    console.log(`reads: ${JSON.stringify(seen)}`);
    if (seen.ok === 0 || seen.fifo === 0) {
      throw new Error(`swaps not seen: ${JSON.stringify(seen)}`);
    }
    if (pendingStuckOpens() !== 0) throw new Error("a parked open was left behind");
  });
});
