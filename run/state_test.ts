import { assert, assertEquals, assertThrows } from "../lib/test_assert.ts";
import { HeldDir } from "../lib/held_dir.ts";
import { stringifyExact } from "../lib/exact_json.ts";
import {
  bootId,
  chooseState,
  type FoundCopy,
  parseState,
  RUNTIME_STATE_DIR,
  StateError,
  StateFiles,
} from "./state.ts";

const C = { rxBytes: 1n, txBytes: 2n, rxPackets: 3n, txPackets: 4n };
const RUN = { startedAt: 1700000000.5, monotonicNow: 12.25 };

/** A state directory and an output directory with its runtime subdirectory, held. */
function withFiles(fn: (f: StateFiles, paths: { state: string; runtime: string }) => void) {
  const base = Deno.makeTempDirSync();
  const state = HeldDir.hold(`${base}/lib`, { what: "test", create: 0o700 });
  const out = HeldDir.hold(`${base}/run`, { what: "test", create: 0o755 });
  const runtime = out.sub(RUNTIME_STATE_DIR, { mode: 0o700, what: "test" });
  try {
    const files = new StateFiles({
      statePath: `${base}/lib/state.json`,
      outputName: "counters.json",
      dirs: () => ({ state, runtime }),
    });
    fn(files, {
      state: `${base}/lib/state.json`,
      runtime: `${base}/run/${RUNTIME_STATE_DIR}/counters.json.state`,
    });
  } finally {
    for (const d of [runtime, out, state]) d.close();
    Deno.removeSync(base, { recursive: true });
  }
}

Deno.test("parseState: exact to 2^64 - 1; empty, garbage and bad counters say what is wrong", () => {
  const max = (1n << 64n) - 1n;
  const text = `{"schema":1,"seq":7,"services":{"s":{"rxBytes":${max},"txBytes":0,` +
    `"rxPackets":0,"txPackets":0}}}`;
  const s = parseState(text);
  assertEquals([s.seq, s.services.s?.rxBytes], [7, max]);
  assertEquals(parseState('{"schema":1,"services":{}}').seq, 0, "a state from before seq");
  assertThrows(() => parseState(""), StateError, "empty");
  assertThrows(() => parseState("\0\0\0\0"), StateError, "not valid JSON");
  assertThrows(() => parseState("{"), StateError, "not valid JSON");
  assertThrows(() => parseState('{"schema": 2, "services": {}}'), StateError, "schema 1");
  assertThrows(
    () => parseState('{"schema": 1, "services": {"a": {"rxBytes": -1}}}'),
    StateError,
    'service "a"',
  );
  const over = text.replace(String(max), String(max + 1n));
  assertThrows(() => parseState(over), StateError, 'service "s"');
  assertThrows(() => parseState('{"schema":1,"seq":-1,"services":{}}'), StateError, "sequence");
});

Deno.test("chooseState: the good copy with the highest sequence number; bad ones are reported", () => {
  const state = (seq: number, rx: bigint, extra = "") =>
    `{"schema":1,"seq":${seq}${extra},"services":{"s":{"rxBytes":${rx},"txBytes":0,` +
    `"rxPackets":0,"txPackets":0}}}`;
  const P = "/var/lib/stb/state.json";
  const mine = `,"state_path":${JSON.stringify(P)}`;
  const found = (
    s: string | null | Error,
    b: string | null | Error,
    r: string | null | Error,
  ): FoundCopy[] => [
    { copy: "state", path: P, text: s },
    { copy: "backup", path: `${P}.bak`, text: b },
    { copy: "runtime", path: "/run/stb/.runtime-state/c.json.state", text: r },
  ];
  const pick = (f: FoundCopy[]) => {
    const c = chooseState(f, P);
    return [c.chosen?.copy ?? null, c.chosen?.state.services.s?.rxBytes ?? null];
  };
  // After a SIGKILL the runtime copy is ahead of the minute-old disk copy.
  assertEquals(pick(found(state(5, 50n), state(4, 40n), state(9, 90n, mine))), ["runtime", 90n]);
  // After a reboot (no runtime copy) or a clean stop (the same totals), the disk copy.
  assertEquals(pick(found(state(5, 50n), state(4, 40n), null)), ["state", 50n]);
  assertEquals(pick(found(state(9, 90n), null, state(9, 90n, mine))), ["state", 90n]);
  // A power loss left the disk copy empty or garbage: the backup, loudly.
  const empty = chooseState(found("", state(4, 40n), null), P);
  assertEquals([empty.chosen?.copy, empty.diskGood], ["backup", false]);
  assertEquals(empty.rejected, [{ copy: "state", path: P, reason: "it is empty" }]);
  // Unreadable copies are rejected with the reason; nothing good left: from zero.
  const none = chooseState(found(new Error("Input/output error"), "{", null), P);
  assertEquals(none.chosen, null);
  assertEquals(none.rejected.map((r) => r.copy), ["state", "backup"]);
  // A runtime copy of another state file (another --state with the same output) is not used.
  const other = chooseState(found(state(5, 50n), null, state(9, 90n, ',"state_path":"/x"')), P);
  assertEquals([other.chosen?.copy, other.foreign.length], ["state", 1]);
  // First run: nothing anywhere, nothing to say.
  assertEquals(chooseState(found(null, null, null), P), {
    chosen: null,
    rejected: [],
    foreign: [],
    diskGood: false,
  });
});

Deno.test("state files: root-only copies; the previous good disk copy is the backup", () => {
  withFiles((files, paths) => {
    assertEquals(files.load().chosen, null);
    files.save({ s: C }, RUN);
    files.save({ s: { ...C, rxBytes: 10n } }, RUN);
    files.keep({ s: { ...C, rxBytes: 11n } }, RUN);
    for (const p of [paths.state, `${paths.state}.bak`, paths.runtime]) {
      assertEquals(Deno.statSync(p).mode! & 0o777, 0o600, p);
    }
    assertEquals(Deno.statSync(paths.runtime.replace(/\/[^/]*$/, "")).mode! & 0o777, 0o700);
    const start = files.load();
    assertEquals([start.chosen?.copy, start.chosen?.state.services.s?.rxBytes], ["runtime", 11n]);
    assertEquals(start.chosen?.state.seq, 3);
    assertEquals(start.chosen?.state.boot_id, bootId());
    const backup = parseState(Deno.readTextFileSync(`${paths.state}.bak`));
    assertEquals([backup.seq, backup.services.s?.rxBytes], [1, 1n]);
    // Sequence numbers go on from the copy loaded.
    files.save({ s: C }, RUN);
    assertEquals(parseState(Deno.readTextFileSync(paths.state)).seq, 4);
    files.discardRuntime();
    assertThrows(() => Deno.statSync(paths.runtime), Deno.errors.NotFound);
  });
});

Deno.test("state files: a garbage disk copy is passed over, and never becomes the backup", () => {
  withFiles((files, paths) => {
    files.save({ s: { ...C, rxBytes: 40n } }, RUN);
    files.save({ s: { ...C, rxBytes: 50n } }, RUN);
    // A power loss: the disk copy is zeros, no runtime copy (tmpfs is gone).
    Deno.writeTextFileSync(paths.state, "\0".repeat(64));
    const start = files.load();
    assertEquals([start.chosen?.copy, start.chosen?.state.services.s?.rxBytes], ["backup", 40n]);
    assertEquals(start.rejected.map((r) => [r.copy, r.path]), [["state", paths.state]]);
    // The next save replaces the garbage; the backup stays the last good copy.
    files.save({ s: { ...C, rxBytes: 41n } }, RUN);
    const backup = parseState(Deno.readTextFileSync(`${paths.state}.bak`));
    assertEquals(backup.services.s?.rxBytes, 40n);
    // A symlink where a copy should be is not followed: rejected, like garbage.
    Deno.removeSync(paths.state);
    Deno.symlinkSync(`${paths.state}.bak`, paths.state);
    const linked = files.load();
    assertEquals(linked.rejected.map((r) => r.copy), ["state"]);
    assert(/Too many levels of symbolic links|os error 40/.test(linked.rejected[0]!.reason));
  });
});

Deno.test("state files: a reset request is a regular file beside the state, never a link", () => {
  withFiles((files, paths) => {
    assertEquals(files.resetRequested(), false);
    Deno.symlinkSync("/etc/hostname", `${paths.state}.reset`);
    assertEquals(files.resetRequested(), false, "a planted link is no request");
    files.clearResetRequest();
    assertEquals(Deno.readTextFileSync("/etc/hostname").length > 0, true, "its target is kept");
    Deno.writeTextFileSync(`${paths.state}.reset`, "1\n");
    assertEquals(files.resetRequested(), true);
    files.clearResetRequest();
    assertEquals(files.resetRequested(), false);
  });
});

Deno.test("parseState: the kernel readings a copy includes round-trip; a bad record is refused", () => {
  const kernel = [{ id: "ebpf:b:12", services: { a: { ...C, rxBytes: (1n << 64n) - 1n } } }];
  const text = stringifyExact({ schema: 1, seq: 3, services: { a: C }, kernel });
  assertEquals(parseState(text).kernel, kernel);

  assertThrows(
    () => parseState(JSON.stringify({ schema: 1, services: {}, kernel: [{ services: {} }] })),
    StateError,
    "without id",
  );
  assertEquals(parseState(JSON.stringify({ schema: 1, services: {} })).kernel, undefined);
});
