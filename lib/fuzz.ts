/**
 * A small seeded generator for fuzz tests, and the bad-config generator the config fuzz
 * and the CLI sample share. The same seed gives the same cases, so a
 * failure printed with its seed and case number can be replayed exactly.
 */

import { DEFAULT_SERVICES } from "./config.ts";

/** mulberry32: tiny and seedable; quality is plenty for picking mutations. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface Gen {
  next: () => number;
  int(n: number): number;
  pick<T>(items: readonly T[]): T;
  chance(p: number): boolean;
}

export function gen(seed: number): Gen {
  const next = rng(seed);
  return {
    next,
    int: (n) => Math.floor(next() * n),
    pick: (items) => {
      const item = items[Math.floor(next() * items.length)];
      if (item === undefined) throw new Error("pick from an empty list");
      return item;
    },
    chance: (p) => next() < p,
  };
}

/** FUZZ_SEED from the environment, else a fresh one; always printed by the caller. */
export function fuzzSeed(): number {
  const env = Deno.env.get("FUZZ_SEED");
  return env ? Number(env) : Math.floor(Math.random() * 2 ** 31);
}

/** A valid config every generated case breaks in exactly one way. */
export const VALID_CONFIG = {
  services: { ...DEFAULT_SERVICES },
  exclude_extra: ["198.18.0.0/15"],
  output: "/run/stb-netacct/counters.json",
  owner: "cad",
  interval_s: 0.5,
  ct_mark: "0x00510000",
  ct_mask: "0x00ff0000",
};

const JUNK: unknown[] = [
  null,
  true,
  0,
  -1,
  1e308,
  -0,
  "",
  " ",
  "x",
  [],
  {},
  [[]],
  { a: 1 },
  "\u0000",
  "é",
  "0x",
  NaN,
];
const BAD_PATHS = [
  "relative/x",
  "/x/../y",
  "/",
  "//",
  "/./x",
  "/x/.",
  "",
  "x",
  "/a//b",
  "/..",
  "/x\u0000y",
  "..",
];
const BAD_CIDRS = [
  "10.0.0.0/33",
  "10.0.0.1/8",
  "1.2.3",
  "256.0.0.0/8",
  "::/129",
  "fe80::/10/1",
  "",
  "x/8",
  "10.0.0.0/-1",
  "2001:db8:::/32",
  "1.2.3.4/ 8",
];
const BAD_NAMES = ["", " ", "bad name", "-x", "a/b", "x".repeat(65), "é", ".x", "a\nb"];
const TYPOS = [
  "service",
  "servces",
  "Services",
  "exclud",
  "excludeextra",
  "outptu",
  "ower",
  "interval",
  "ct-mark",
  "ctmask",
  "zzzz",
  "__proto__x",
];

/** One config breaking one rule, described for the failure message. */
export function badConfig(g: Gen): [unknown, string] {
  const c: Record<string, unknown> = structuredClone(VALID_CONFIG);
  switch (g.int(14)) {
    case 0:
      return [g.pick([null, 1, "x", [], [VALID_CONFIG], true]), "not an object"];
    case 1:
      c[g.pick(TYPOS) + (g.chance(0.3) ? String(g.int(9)) : "")] = g.pick(JUNK);
      return [c, "unknown key"];
    case 2:
      c.services = g.pick([[], "x", 1, null, true, {}]);
      return [c, "bad services"];
    case 3:
      (c.services as Record<string, unknown>)[g.pick(Object.keys(DEFAULT_SERVICES))] = g.pick(
        BAD_PATHS,
      );
      return [c, "bad cgroup path"];
    case 4:
      (c.services as Record<string, unknown>)[g.pick(BAD_NAMES)] = "/x/y";
      return [c, "bad service name"];
    case 5: {
      const s = c.services as Record<string, unknown>;
      const [a, b] = Object.keys(s); // VALID_CONFIG names three services
      if (a === undefined || b === undefined) throw new Error("VALID_CONFIG lost its services");
      s[b] = String(s[a]) + g.pick(["", "/"]);
      return [c, "duplicate cgroup"];
    }
    case 6:
      (c.services as Record<string, unknown>)["server"] = g.pick([1, null, [], {}, true]);
      return [c, "service path type"];
    case 7: {
      const field = g.pick(["exclude", "exclude_extra"]);
      c[field] = g.chance(0.3)
        ? g.pick(["10.0.0.0/8", 1, null, {}])
        : [g.chance(0.5) ? g.pick(BAD_CIDRS) : g.pick(JUNK.filter((j) => typeof j !== "string"))];
      return [c, `bad ${field}`];
    }
    case 8:
      c.exclude = g.pick([["10.0.0.0/8", "10.1.0.0/16"], ["2001:db8::/32", "2001:db8:1::/48"], [
        "1.2.3.0/24",
        "1.2.3.0/24",
      ]]);
      return [c, "overlapping exclude"];
    case 9:
      c.exclude_extra = [g.pick(["10.1.0.0/16", "192.168.1.0/24", "fe80::1/128", "127.0.0.1/32"])];
      return [c, "exclude_extra inside the defaults"];
    case 10:
      c.output = g.pick(["relative.json", "/run/x/", "/run/../etc/passwd", 1, null, "", "/"]);
      return [c, "bad output"];
    case 11:
      c.owner = g.pick(["Bad User", "-x", "", "a".repeat(40), -1, 1.5, true, [], {}]);
      return [c, "bad owner"];
    case 12:
      c.interval_s = g.pick([0, 0.05, 10.5, -1, "0.5", null, NaN, Infinity, [], 1e9]);
      return [c, "bad interval"];
    default:
      if (g.chance(0.5)) c.ct_mark = g.pick([0, "0x", "0x1g", -5, 2 ** 33, "81", null, 1.5]);
      else Object.assign(c, { ct_mark: "0x01000000", ct_mask: "0x00ff0000" });
      return [c, "bad ct_mark/ct_mask"];
  }
}
