import { assert, assertEquals } from "./test_assert.ts";
import { interfaceIndex, InterfaceIndexes, interfaceNameProblem } from "./interfaces.ts";

Deno.test("interfaceNameProblem accepts what the kernel accepts", () => {
  for (const ok of ["tailscale0", "wg0", "enp0s31f6", "a", "x".repeat(15), "br-1a2b.100", "é"]) {
    assertEquals(interfaceNameProblem(ok), null, ok);
  }
});

Deno.test("interfaceNameProblem refuses names the kernel never gives, and says why", () => {
  const bad: [string, RegExp][] = [
    ["", /never empty/],
    ["x".repeat(16), /at most 15 bytes.*16/],
    ["ééééééééé", /at most 15 bytes.*18/],
    [".", /not interface names/],
    ["..", /not interface names/],
    ["a/b", /"\/"/],
    ["eth0:1", /":"/],
    ["wg 0", /whitespace/],
    ["wg\t0", /whitespace/],
    ['wg"0', /quotes/],
    ["eth+", /wildcards/],
    ["tailscale*", /wildcards/],
  ];
  for (const [name, why] of bad) {
    const p = interfaceNameProblem(name);
    assert(p !== null && why.test(p), `${JSON.stringify(name)}: ${p}`);
  }
});

Deno.test("interfaceIndex finds lo and nothing for a name that is not there", () => {
  assertEquals(interfaceIndex("lo"), 1);
  assertEquals(interfaceIndex("stb-nonesuch0"), 0);
});

Deno.test("InterfaceIndexes reports changes only, and logs a missing name once", () => {
  const table = new Map<string, number>([["wg0", 7]]);
  const logs: string[] = [];
  const r = new InterfaceIndexes(
    ["wg0", "tailscale0"],
    (m) => logs.push(m),
    (n) => table.get(n) ?? 0,
  );
  assertEquals(r.resolve(), [7]);
  assertEquals(r.resolve(), null);
  assertEquals(logs.length, 1); // tailscale0 missing, said once
  table.set("tailscale0", 3); // appears
  assertEquals(r.resolve(), [3, 7]);
  table.delete("wg0"); // renamed away
  table.set("wg1", 7);
  assertEquals(r.resolve(), [3]);
  assertEquals(r.resolve(), null);
  assertEquals(logs.length, 3);
});
