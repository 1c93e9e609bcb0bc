import { exclusionsByFamily, MonotonicCounters, serviceMarks } from "./firewall.ts";
import { BackendError } from "./backend.ts";
import { parseCidr } from "../lib/cidr.ts";
import { assertEquals } from "../lib/test_assert.ts";

function assertBackendError(f: () => unknown, needle: string): void {
  try {
    f();
  } catch (e) {
    if (e instanceof BackendError && e.message.includes(needle)) return;
    throw new Error(`wrong error: ${e}`);
  }
  throw new Error("did not throw");
}

Deno.test("serviceMarks counts up from ct_mark inside the mask", () => {
  assertEquals(serviceMarks(0x00510000, 0x00ff0000, 3), [0x00510000, 0x00520000, 0x00530000]);
  // Non-contiguous mask: bits outside it are skipped.
  assertEquals(serviceMarks(0x1, 0x5, 3), [0x1, 0x4, 0x5]);
  assertEquals(serviceMarks(0x80000000, 0xc0000000, 2), [0x80000000, 0xc0000000]);
});

Deno.test("serviceMarks refuses marks that do not fit", () => {
  assertBackendError(() => serviceMarks(0x00fe0000, 0x00ff0000, 3), "room for only 2");
  assertBackendError(() => serviceMarks(0x01000000, 0x00ff0000, 1), "outside");
  assertBackendError(() => serviceMarks(0, 0x00ff0000, 1), "unmarked");
});

Deno.test("exclusionsByFamily adds IPv4-mapped forms of IPv4 prefixes to IPv6", () => {
  const { v4, v6 } = exclusionsByFamily(["10.0.0.0/8", "fc00::/7", "127.0.0.1/32"].map(parseCidr));
  assertEquals(v4, ["10.0.0.0/8", "127.0.0.1/32"]);
  assertEquals(v6, ["fc00::/7", "::ffff:10.0.0.0/104", "::ffff:127.0.0.1/128"]);
});

Deno.test("MonotonicCounters keeps totals across a kernel counter restart", () => {
  const m = new MonotonicCounters(["a"]);
  const c = (tx: bigint) => ({ a: { rxBytes: 0n, txBytes: tx, rxPackets: 0n, txPackets: 0n } });
  assertEquals(m.update(c(100n)).a?.txBytes, 100n);
  assertEquals(m.update(c(150n)).a?.txBytes, 150n);
  assertEquals(m.update(c(20n)).a?.txBytes, 170n); // rules re-inserted: 150 kept as offset
  assertEquals(m.update(c(30n)).a?.txBytes, 180n);
  assertEquals(m.update({}).a?.txBytes, 180n); // counter gone
});
