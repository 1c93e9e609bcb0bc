import { assert, assertEquals, assertStringIncludes } from "./test_assert.ts";
import { sdNotify, sockaddrUn } from "./sd_notify.ts";

Deno.test("sockaddrUn: a path NUL-terminated, an abstract name behind a NUL", () => {
  const fs = sockaddrUn("/run/systemd/notify");
  assertEquals(fs.length, 2 + "/run/systemd/notify".length + 1);
  assertEquals([fs.addr[0], fs.addr[1]], [1, 0], "AF_UNIX, little-endian");
  assertEquals(new TextDecoder().decode(fs.addr.subarray(2, fs.length - 1)), "/run/systemd/notify");
  assertEquals(fs.addr[fs.length - 1], 0);

  const abs = sockaddrUn("@sd-notify");
  assertEquals(abs.length, 2 + 1 + "sd-notify".length, "no terminator on an abstract name");
  assertEquals(abs.addr[2], 0);
  assertEquals(new TextDecoder().decode(abs.addr.subarray(3, abs.length)), "sd-notify");

  let error = "";
  try {
    sockaddrUn("/" + "x".repeat(200));
  } catch (e) {
    error = (e as Error).message;
  }
  assertStringIncludes(error, "longer than a socket address can hold");
});

Deno.test("sdNotify sends nothing outside systemd", () => {
  assertEquals(sdNotify("READY=1", undefined), false);
  assertEquals(sdNotify("READY=1", ""), false);
  assertEquals(sdNotify("READY=1", "relative/path"), false);
});

/** A datagram socket that prints what it receives: listenDatagram on unix is unstable. */
const RECEIVER = `
const l = Deno.listenDatagram({ transport: "unixpacket", path: Deno.args[0] });
console.log("ready");
const [data] = await l.receive();
console.log(JSON.stringify(new TextDecoder().decode(data)));
l.close();`;

Deno.test("sdNotify delivers the state in one datagram to NOTIFY_SOCKET", async () => {
  const dir = await Deno.makeTempDir({ prefix: "stb-sd-notify-" });
  const path = `${dir}/notify`;
  const receiver = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--unstable-net", RECEIVER, path],
    env: { DENO_NO_UPDATE_CHECK: "1" },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const lines = receiver.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let out = "";
    while (!out.includes("ready\n")) {
      const { value, done } = await lines.read();
      if (done) throw new Error(`The receiver ended early: ${out}`);
      out += value;
    }
    assert(sdNotify("READY=1\nSTATUS=counting 3 services", path), "sent");
    for (;;) {
      const { value, done } = await lines.read();
      if (done) break;
      out += value;
    }
    assertEquals(
      JSON.parse(out.slice(out.indexOf("\n") + 1)),
      "READY=1\nSTATUS=counting 3 services",
    );
  } finally {
    try {
      receiver.kill("SIGKILL");
    } catch { /* ended */ }
    await receiver.status;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sdNotify names the socket when the datagram cannot go", () => {
  let error = "";
  try {
    sdNotify("READY=1", "/nonexistent-stb-netacct/notify");
  } catch (e) {
    error = (e as Error).message;
  }
  assertStringIncludes(error, "sendto '/nonexistent-stb-netacct/notify'");
});
