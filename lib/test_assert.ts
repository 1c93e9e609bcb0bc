/**
 * The few assertions the tests need. @std/assert lives on JSR, which is unreachable here,
 * so these stay small and strict (deep equality by structure, typed arrays included).
 */

export class AssertionError extends Error {
  override name = "AssertionError";
}

function show(v: unknown): string {
  if (v instanceof Uint8Array) return `Uint8Array[${Array.from(v).join(",")}]`;
  if (typeof v === "bigint") return `${v}n`;
  try {
    return JSON.stringify(v, (_, x) => (typeof x === "bigint" ? `${x}n` : x));
  } catch {
    return String(v);
  }
}

export function equal(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== "object") return false;
  if (ArrayBuffer.isView(a) || ArrayBuffer.isView(b)) {
    if (!ArrayBuffer.isView(a) || !ArrayBuffer.isView(b) || a.constructor !== b.constructor) {
      return false;
    }
    const x = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    const y = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
    return x.length === y.length && x.every((v, i) => v === y[i]);
  }
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a as object), kb = Object.keys(b as object);
  if (ka.length !== kb.length) return false;
  return ka.every((k) =>
    equal((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])
  );
}

export function assert(cond: unknown, msg = "assertion failed"): asserts cond {
  if (!cond) throw new AssertionError(msg);
}

export function assertEquals(actual: unknown, expected: unknown, msg?: string): void {
  if (!equal(actual, expected)) {
    throw new AssertionError(
      `${msg ? msg + ": " : ""}values differ\n  actual:   ${show(actual)}\n  expected: ${
        show(expected)
      }`,
    );
  }
}

export function assertMatch(actual: string, re: RegExp, msg?: string): void {
  if (!re.test(actual)) {
    throw new AssertionError(`${msg ? msg + ": " : ""}${show(actual)} does not match ${re}`);
  }
}

export function assertStringIncludes(actual: string, part: string, msg?: string): void {
  if (!actual.includes(part)) {
    throw new AssertionError(
      `${msg ? msg + ": " : ""}${show(actual)} does not include ${show(part)}`,
    );
  }
}

// deno-lint-ignore no-explicit-any
type ErrorClass = new (...args: any[]) => Error;

export function assertThrows(fn: () => unknown, cls?: ErrorClass, includes?: string): Error {
  try {
    fn();
  } catch (e) {
    if (cls && !(e instanceof cls)) {
      throw new AssertionError(
        `expected ${cls.name}, got ${(e as Error)?.name}: ${(e as Error)?.message}`,
      );
    }
    if (includes && !(e as Error).message.includes(includes)) {
      throw new AssertionError(
        `error message ${show((e as Error).message)} does not include ${show(includes)}`,
      );
    }
    return e as Error;
  }
  throw new AssertionError("expected the function to throw");
}

/** assertThrows for a promise: awaits `fn()` and checks how it rejected. */
export async function assertRejects(
  fn: () => Promise<unknown>,
  cls?: ErrorClass,
  includes?: string,
): Promise<Error> {
  let error: unknown;
  try {
    await fn();
  } catch (e) {
    error = e;
  }
  if (error === undefined) throw new AssertionError("expected the promise to reject");
  return assertThrows(
    () => {
      throw error;
    },
    cls,
    includes,
  );
}

/** BPF objects (progs, maps, links) this process holds fds to, from /proc/self/fdinfo. */
export function heldBpfObjects(): string[] {
  const held: string[] = [];
  for (const e of Deno.readDirSync("/proc/self/fdinfo")) {
    let info: string;
    try {
      info = Deno.readTextFileSync(`/proc/self/fdinfo/${e.name}`);
    } catch {
      continue; // the fd of the directory listing itself, closed meanwhile
    }
    const m = info.match(/^(prog_id|map_id|link_id):\s*(\d+)/m);
    if (m) held.push(`${m[1]}=${m[2]}`);
  }
  return held;
}

/** This process holds no BPF program, map or link (a backend stopped cleanly). */
export function assertNoBpfHeld(msg: string): void {
  assertEquals(heldBpfObjects(), [], msg);
}

/** `v`, checked to be there: a test reading a field it expects fails naming it, not with a TypeError. */
export function present<T>(v: T | null | undefined, what: string): T {
  if (v === undefined || v === null) throw new AssertionError(`${what} is missing`);
  return v;
}
