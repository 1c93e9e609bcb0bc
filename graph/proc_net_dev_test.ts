import { nonLoopback, parseProcNetDev } from "./proc_net_dev.ts";

const here = new URL("./testdata/", import.meta.url);

function eq(actual: unknown, expected: unknown, what = ""): void {
  const a = JSON.stringify(actual), e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what}: expected ${e}, got ${a}`);
}

Deno.test("parseProcNetDev reads a captured VM /proc/net/dev", () => {
  const m = parseProcNetDev(Deno.readTextFileSync(new URL("proc_net_dev_vm.txt", here)));
  eq([...m.keys()], ["lo", "ifb0", "ifb1", "eth0"]);
  eq(m.get("eth0"), { rx: 68067418, rxPackets: 1566, tx: 90312, txPackets: 909 });
  eq(m.get("lo"), { rx: 3245, rxPackets: 30, tx: 3245, txPackets: 30 });
});

Deno.test("parseProcNetDev reads a long veth name from a captured netns", () => {
  const m = parseProcNetDev(Deno.readTextFileSync(new URL("proc_net_dev_netns.txt", here)));
  eq(m.get("veth-stbgraph0"), { rx: 214743, rxPackets: 3236, tx: 315787005, txPackets: 6761 });
  eq([...nonLoopback(m).entries()], [["veth-stbgraph0", { rx: 214743, tx: 315787005 }]]);
});

Deno.test("parseProcNetDev handles a number glued to the colon and skips junk", () => {
  const text = [
    "Inter-|   Receive                                                |  Transmit",
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets",
    "  eth0:1234567890   42    0    0    0     0          0         0 987654321   7    0    0    0     0       0          0",
    "  bad0: 1 2 3",
    "  neg0: -1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0",
    "garbage without colon",
    "",
  ].join("\n");
  const m = parseProcNetDev(text);
  eq([...m.keys()], ["eth0"]);
  eq(m.get("eth0")!.rx, 1234567890);
  eq(m.get("eth0")!.tx, 987654321);
});

Deno.test("nonLoopback drops lo only", () => {
  const m = parseProcNetDev(Deno.readTextFileSync(new URL("proc_net_dev_vm.txt", here)));
  eq([...nonLoopback(m).keys()], ["ifb0", "ifb1", "eth0"]);
});
