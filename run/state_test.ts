import { assertEquals, assertThrows } from "../lib/test_assert.ts";
import { bootId, loadState, parseState, saveState, StateError } from "./state.ts";

Deno.test("state round-trips, is root-only, and bad files are refused by name", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const path = `${dir}/state.json`;
    assertEquals(loadState(path), null);
    const c = { rxBytes: 1, txBytes: 2, rxPackets: 3, txPackets: 4 };
    saveState(path, { server: c });
    const back = loadState(path)!;
    assertEquals(back.services, { server: c });
    assertEquals(back.boot_id, bootId());
    assertEquals(Deno.statSync(path).mode! & 0o777, 0o600);
    assertThrows(() => parseState("{", path), StateError, "not valid JSON");
    assertThrows(() => parseState('{"schema": 2, "services": {}}', path), StateError, "schema 1");
    assertThrows(
      () => parseState('{"schema": 1, "services": {"a": {"rxBytes": -1}}}', path),
      StateError,
      'service "a"',
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
