import { assertEquals, assertStringIncludes, assertThrows } from "../lib/test_assert.ts";
import { buildCounters, holdOutputDir, OutputError, OutputFiles } from "./output.ts";
import { UsageError } from "../lib/errors.ts";
import { parseCounters, serializeCounters } from "../lib/contract.ts";

Deno.test("holdOutputDir creates 0755 and refuses directories others control", () => {
  const base = Deno.makeTempDirSync();
  try {
    holdOutputDir(`${base}/run/stb`).close();
    assertEquals(Deno.statSync(`${base}/run/stb`).mode! & 0o777, 0o755);
    Deno.mkdirSync(`${base}/open`);
    Deno.chmodSync(`${base}/open`, 0o777);
    assertThrows(() => holdOutputDir(`${base}/open`), OutputError, "chmod go-w");
    Deno.mkdirSync(`${base}/theirs`, { mode: 0o755 });
    Deno.chownSync(`${base}/theirs`, 65534, 65534);
    assertThrows(() => holdOutputDir(`${base}/theirs`), OutputError, "owned by uid 65534");
    Deno.symlinkSync(`${base}/run/stb`, `${base}/link`);
    assertThrows(() => holdOutputDir(`${base}/link`), OutputError, "symlink");
  } finally {
    Deno.removeSync(base, { recursive: true });
  }
});

Deno.test("buildCounters produces a contract-valid sample", () => {
  const z = { rxBytes: 5n, txBytes: 6n, rxPackets: 1n, txPackets: 2n };
  const c = buildCounters({
    backend: "nft",
    fallbackReason: "ebpf: no BTF",
    services: { s: { path: "/a", present: false, counters: z } },
    total: z,
    tsMonotonic: 10.1234567,
    tsUnix: 1795000000.1234,
    intervalS: 0.5,
    bootId: "b",
    startedAt: 1,
  });
  const back = parseCounters(serializeCounters(c));
  assertEquals(back.backend_fallback_reason, "ebpf: no BTF");
  assertEquals([back.boot_id, back.started_at], ["b", 1]);
  assertEquals(back.services.s, {
    rx_bytes_total: 5n,
    tx_bytes_total: 6n,
    rx_packets_total: 1n,
    tx_packets_total: 2n,
    cgroup: "/a",
    present: false,
  });
  assertEquals(back.ts_monotonic, 10.123457);
});

Deno.test("an output that names a file run did not write is refused; its own is taken", () => {
  const base = Deno.makeTempDirSync();
  const output = `${base}/out/counters.json`;
  const files = new OutputFiles({ output, statePath: `${output}.state`, owner: null });
  try {
    files.prepare();
    files.checkExisting(); // nothing there yet
    const z = { rxBytes: 0n, txBytes: 0n, rxPackets: 0n, txPackets: 0n };
    const ours = buildCounters({
      backend: "nft",
      fallbackReason: null,
      services: {},
      total: z,
      tsMonotonic: 1,
      tsUnix: 1,
      intervalS: 0.5,
      bootId: "b",
      startedAt: 1,
    });
    files.publish(ours);
    files.checkExisting(); // a restart takes its own file over
    const strangers: [string, () => void][] = [
      ["is not a counters file", () => Deno.writeTextFileSync(output, "root:$y$j9T$...:19000::\n")],
      ["is not a counters file", () => Deno.writeTextFileSync(output, '{"rx_bytes_total": 1}')],
      ["is a directory", () => Deno.mkdirSync(output)],
      ["is a symlink", () => Deno.symlinkSync("/etc/hostname", output)],
    ];
    for (const [why, make] of strangers) {
      Deno.removeSync(output, { recursive: true });
      make();
      const e = assertThrows(() => files.checkExisting(), UsageError);
      assertStringIncludes(e.message, `The output "${output}" exists and ${why}`);
      assertStringIncludes(e.message, 'point "output" (or --output) at a new file');
    }
    // Empty (a power loss) is taken over: nothing to lose, and counting must start.
    Deno.removeSync(output, { recursive: true });
    Deno.writeTextFileSync(output, "");
    files.checkExisting();
  } finally {
    files.close();
    Deno.removeSync(base, { recursive: true });
  }
});

Deno.test("an output the configured owner garbled is still taken over: they own it", () => {
  const base = Deno.makeTempDirSync();
  const output = `${base}/out/counters.json`;
  const owner = { uid: 65534, gid: 65534 };
  const files = new OutputFiles({ output, statePath: `${output}.state`, owner });
  try {
    files.prepare();
    Deno.writeTextFileSync(output, "not json");
    Deno.chownSync(output, 65534, 65534);
    files.checkExisting();
    Deno.chownSync(output, 0, 0); // root's garbage is someone else's file
    assertThrows(() => files.checkExisting(), UsageError, "is not a counters file");
  } finally {
    files.close();
    Deno.removeSync(base, { recursive: true });
  }
});
