import { assertEquals, assertThrows } from "./test_assert.ts";
import {
  ConfigError,
  DEFAULT_SERVICES,
  defaultConfigJson,
  didYouMean,
  loadConfig,
  validateConfig,
} from "./config.ts";

const SRC = "test.json";

Deno.test("an empty config means the StB defaults", () => {
  const c = validateConfig({}, SRC);
  assertEquals(c.services, { ...DEFAULT_SERVICES });
  assertEquals(c.exclude.length, 15);
  assertEquals(c.output, "/run/stb-netacct/counters.json");
  assertEquals(c.interval_s, 0.5);
  assertEquals(c.owner, null);
});

Deno.test("the file install writes is itself valid", () => {
  const c = validateConfig(JSON.parse(defaultConfigJson("cad")), SRC);
  assertEquals(c.owner, "cad");
  // The range's ends: root, and the highest uid there is.
  assertEquals(validateConfig({ owner: 0 }, "t").owner, "0");
  assertEquals(validateConfig({ owner: 4294967294 }, "t").owner, "4294967294");
  assertEquals(validateConfig({ owner: "4294967294" }, "t").owner, "4294967294");
  assertEquals(c.exclude.length, 15);
});

Deno.test("exclude replaces the defaults, exclude_extra adds to them", () => {
  assertEquals(validateConfig({ exclude: ["10.0.0.0/8"] }, SRC).exclude.map((c) => c.text), [
    "10.0.0.0/8",
  ]);
  const extra = validateConfig({ exclude_extra: ["198.51.100.0/24"] }, SRC).exclude;
  assertEquals(extra.length, 16);
  assertEquals(extra[15]?.text, "198.51.100.0/24");
});

Deno.test("every bad config names the field, the value and the fix", () => {
  const cases: [unknown, string][] = [
    [[], "must hold a JSON object"],
    [{ servics: {} }, 'Unknown key "servics" in test.json: did you mean "services"?'],
    [{ zzzzzzzz: 1 }, "known keys are"],
    [{ services: [] }, '"services" is []'],
    [{ services: {} }, '"services" is empty'],
    [{ services: { a: 5 } }, '"services.a" is 5'],
    [
      { services: { a: "relative/path" } },
      '"services.a": "relative/path" is not an absolute cgroup path',
    ],
    [{ services: { a: "/x/../y" } }, '"services.a": "/x/../y" has an empty, "." or ".." part'],
    [{ services: { a: "/" } }, "is the cgroup2 root"],
    [{ services: { a: "/x", b: "/x/" } }, 'name the same cgroup "/x"'],
    [{ services: { "bad name": "/x" } }, 'Service name "bad name" is not allowed'],
    [{ exclude: "10.0.0.0/8" }, '"exclude" is "10.0.0.0/8": it must be a list'],
    [{ exclude: ["10.0.0.0/33"] }, '"exclude[0]": "10.0.0.0/33" has a bad prefix length'],
    [{ exclude: [7] }, '"exclude[0]" is 7'],
    [{ exclude: ["10.0.0.0/8", "10.0.0.0/8"] }, 'Prefix "10.0.0.0/8" is listed twice'],
    [{ exclude: ["10.0.0.0/8", "10.2.0.0/16"] }, 'Prefixes "10.0.0.0/8" and "10.2.0.0/16" overlap'],
    [
      { exclude_extra: ["10.2.0.0/16"] },
      '"exclude_extra" prefix "10.2.0.0/16" overlaps "10.0.0.0/8"',
    ],
    [{ output: "relative.json" }, '"output" is "relative.json"'],
    [{ output: "/run/../etc/passwd" }, '".." is not allowed'],
    [{ owner: "Bad User" }, '"owner" is "Bad User"'],
    [{ owner: 9999999999 }, '"owner" is 9999999999: a uid is 0 to 4294967294'],
    [{ owner: "9999999999" }, '"owner" is "9999999999": a uid is 0 to 4294967294'],
    [{ owner: 4294967295 }, '"owner" is 4294967295: a uid is 0 to 4294967294 (4294967295 means'],
    [{ owner: "4294967295" }, "use the owner's user name"],
    [{ owner: -1 }, '"owner" is -1: a uid is 0 to'],
    [{ owner: 1.5 }, '"owner" is 1.5: a uid is 0 to'],
    [{ interval_s: 0.01 }, "from 0.1 to 10"],
    [{ interval_s: "0.5" }, '"interval_s" in test.json is "0.5"'],
    [{ ct_mark: 0 }, '"ct_mark" is 0'],
    [{ ct_mark: "0x100", ct_mask: "0xff" }, "has bits outside"],
    [{ history: true }, '"history" is true: it must be an object like'],
    [
      { history: { enable: false } },
      'Unknown key "history.enable": did you mean "history.enabled"?',
    ],
    [{ history: { enabled: "no" } }, '"history.enabled" is "no": use true or false'],
    [{ history: { retention: "48h" } }, '"history.retention" is "48h": it must be an object'],
    [
      { history: { retention: { minute: "48h" } } },
      'Unknown key "history.retention.minute": did you mean "history.retention.minutes"?',
    ],
    [
      { history: { retention: { hours: "90 days" } } },
      '"history.retention.hours" is "90 days": use a number and a unit (h, d, w, mo, y)',
    ],
    [{ history: { retention: { days: 30 } } }, '"history.retention.days" is 30: use a number'],
    [
      { history: { retention: { minutes: "30m" } } },
      '"history.retention.minutes" is "30m": use a number and a unit',
    ],
    [
      { history: { retention: { hours: "12h" } } },
      '"history.retention.hours" is "12h": keep hours rows at least 1d (e.g. "90d")',
    ],
    [{ history: { retention: { months: "0y" } } }, '"history.retention.months" is "0y"'],
  ];
  for (const [raw, want] of cases) assertThrows(() => validateConfig(raw, SRC), ConfigError, want);
});

Deno.test("history: on by default with vnstat's retention; each resolution configurable", () => {
  const d = validateConfig({}, SRC).history;
  assertEquals(d.enabled, true);
  assertEquals(d.retention, {
    minutes: 48 * 3600,
    hours: 90 * 86400,
    days: d.retention.days,
    months: null,
  });
  assertEquals(Math.round(d.retention.days! / 86400), 1826);
  const c = validateConfig({
    history: {
      enabled: false,
      retention: { minutes: "2d", hours: "26w", days: "forever", months: "10y" },
    },
  }, SRC).history;
  assertEquals(c.enabled, false);
  assertEquals([c.retention.minutes, c.retention.hours, c.retention.days], [
    2 * 86400,
    26 * 7 * 86400,
    null,
  ]);
  assertEquals(Math.round(c.retention.months! / 86400), 3652);
});

Deno.test("didYouMean finds near misses only", () => {
  assertEquals(didYouMean("interval", ["interval_s", "output"]), "interval_s");
  assertEquals(didYouMean("exclude-extra", ["exclude", "exclude_extra"]), "exclude_extra");
  assertEquals(didYouMean("banana", ["interval_s", "output"]), null);
});

Deno.test("loadConfig: absent default path gives defaults, absent explicit path is an error", () => {
  const dir = Deno.makeTempDirSync();
  try {
    assertEquals(loadConfig(`${dir}/none.json`, false).source, "built-in defaults");
    assertThrows(() => loadConfig(`${dir}/none.json`, true), ConfigError, "does not exist");
    Deno.writeTextFileSync(`${dir}/bad.json`, '{"services": ');
    assertThrows(() => loadConfig(`${dir}/bad.json`, true), ConfigError, "is not valid JSON");
    Deno.writeTextFileSync(`${dir}/big.json`, " ".repeat((1 << 20) + 1));
    assertThrows(() => loadConfig(`${dir}/big.json`, true), ConfigError, "bytes");
    Deno.mkdirSync(`${dir}/d.json`);
    assertThrows(() => loadConfig(`${dir}/d.json`, true), ConfigError, "not a regular file");
    Deno.writeTextFileSync(`${dir}/ok.json`, '{"services": {"s": "/a/b"}, "owner": 1000}');
    const c = loadConfig(`${dir}/ok.json`, true);
    assertEquals(c.services, { s: "/a/b" });
    assertEquals(c.owner, "1000");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("exclude_interfaces: none by default, names kept in order", () => {
  assertEquals(validateConfig({}, SRC).exclude_interfaces, []);
  assertEquals(validateConfig({}, SRC).internal_onlink, false);
  const c = validateConfig(
    { exclude_interfaces: ["tailscale0", "wg0"], internal_onlink: true },
    SRC,
  );
  assertEquals(c.exclude_interfaces, ["tailscale0", "wg0"]);
  assertEquals(c.internal_onlink, true);
});

Deno.test("exclude_interfaces refuses what cannot name an interface, quoting it", () => {
  const cases: [unknown, RegExp][] = [
    ["tailscale0", /must be a list of interface names/],
    [[1], /"exclude_interfaces\[0\]" is 1: write interface names as strings/],
    [
      ["wg0", "a-very-long-ifname0"],
      /"exclude_interfaces\[1\]" is "a-very-long-ifname0".*at most 15 bytes/,
    ],
    [["eth0/1"], /"eth0\/1", which cannot name an interface.*ip link/],
    [["wg0", "wg0"], /"wg0" is listed twice/],
    [["lo"], /loopback never counts anyway/],
    [Array.from({ length: 16 }, (_, i) => `wg${i}`), /at most 15/],
  ];
  for (const [v, msg] of cases) {
    const e = assertThrows(() => validateConfig({ exclude_interfaces: v }, SRC), ConfigError);
    assertEquals(msg.test(e.message), true, e.message);
  }
  assertThrows(
    () => validateConfig({ internal_onlink: "yes" }, SRC),
    ConfigError,
    '"internal_onlink" is "yes": use true or false',
  );
});

Deno.test("names: on by default, off with enabled false; anything else is refused", () => {
  assertEquals(validateConfig({}, SRC).names, { enabled: true });
  assertEquals(validateConfig({ names: { enabled: false } }, SRC).names, { enabled: false });
  assertThrows(() => validateConfig({ names: true }, SRC), ConfigError, '"names" is true');
  assertThrows(
    () => validateConfig({ names: { enable: false } }, SRC),
    ConfigError,
    'Unknown key "names.enable"',
  );
  assertThrows(
    () => validateConfig({ names: { enabled: "no" } }, SRC),
    ConfigError,
    '"names.enabled"',
  );
});
