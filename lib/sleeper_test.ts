import { assert, assertEquals } from "./test_assert.ts";
import { Sleeper } from "./sleeper.ts";

Deno.test("Sleeper.sleep times out, and a wake ends the next sleep once", () => {
  const sleeper = new Sleeper();
  try {
    let t0 = performance.now();
    assertEquals(sleeper.sleep(40), "timeout");
    assert(performance.now() - t0 >= 39, `slept ${performance.now() - t0} ms of 40`);

    sleeper.wake();
    sleeper.wake(); // two wakes before a sleep still end just one
    t0 = performance.now();
    assertEquals(sleeper.sleep(2000), "ready");
    assert(performance.now() - t0 < 100, "a pending wake returns at once");
    assertEquals(sleeper.sleep(20), "timeout", "the wake was consumed");
  } finally {
    sleeper.close();
    sleeper.close();
  }
});

/**
 * `run` in miniature, in a process of its own: `deno test` runs test code on a thread other
 * than the process's main one, and the kernel hands a process-directed signal to the main
 * thread, as it does for `run` (`deno run`, or the compiled binary).
 */
const SIGNALLED_SLEEPER = `
import { Sleeper } from ${JSON.stringify(new URL("./sleeper.ts", import.meta.url).href)};
const sleeper = new Sleeper();
let heard = 0;
Deno.addSignalListener("SIGUSR2", () => heard++);
console.log("sleeping");
const t0 = performance.now();
const reason = sleeper.sleep(5000);
const took = performance.now() - t0;
const heardBeforeTurn = heard;
for (let i = 0; i < 20 && heard === 0; i++) await new Promise((r) => setTimeout(r, 5));
console.log(JSON.stringify({ reason, took, heardBeforeTurn, heard }));
`;

Deno.test("Sleeper.sleep is interrupted by a signal, whose listener runs on the next event-loop turn", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", SIGNALLED_SLEEPER],
    env: { DENO_NO_UPDATE_CHECK: "1" },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  try {
    while (!out.includes("sleeping\n")) {
      const { value, done } = await lines.read();
      if (done) throw new Error(`The sleeper ended early: ${out}`);
      out += value;
    }
    await new Promise((r) => setTimeout(r, 200)); // into the sleep
    child.kill("SIGUSR2");
    for (;;) {
      const { value, done } = await lines.read();
      if (done) break;
      out += value;
    }
    const result = JSON.parse(out.slice(out.indexOf("\n") + 1));
    assertEquals(result.reason, "interrupted", `woke after ${Math.round(result.took)} ms`);
    assert(result.took < 2000, `the signal ended the sleep (${Math.round(result.took)} ms)`);
    assertEquals(result.heardBeforeTurn, 0, "listeners wait for the event loop");
    assertEquals(result.heard, 1, "the listener ran once the event loop turned");
    assertEquals((await child.status).code, 0);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* ended */ }
    await child.status;
  }
});

Deno.test("Sleeper.sleepAsync keeps the event loop running and ends on wake", async () => {
  const sleeper = new Sleeper();
  try {
    let timerRan = false;
    setTimeout(() => {
      timerRan = true;
      sleeper.wake();
    }, 50);
    const t0 = performance.now();
    assertEquals(await sleeper.sleepAsync(5000), "ready");
    assert(timerRan, "a timer ran during the sleep");
    assert(performance.now() - t0 < 2000, "the wake ended the sleep");
    assertEquals(await sleeper.sleepAsync(20), "timeout");
  } finally {
    sleeper.close();
  }
});
