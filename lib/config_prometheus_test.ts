import { assertEquals, assertStringIncludes, assertThrows } from "./test_assert.ts";
import {
  checkListenAllowed,
  ConfigError,
  DEFAULT_PROMETHEUS_TEXTFILE,
  parseListenAddress,
  validateConfig,
} from "./config.ts";

const SRC = "test.json";

Deno.test("prometheus: textfile on at the node-exporter path, listener off, by default", () => {
  assertEquals(validateConfig({}, SRC).prometheus, {
    textfile: DEFAULT_PROMETHEUS_TEXTFILE,
    listen: null,
    allowRemote: false,
  });
  assertEquals(DEFAULT_PROMETHEUS_TEXTFILE, "/var/lib/prometheus/node-exporter/stb_netacct.prom");
  assertEquals(
    validateConfig({ prometheus: { textfile: null, listen: "[::1]:9877" } }, SRC).prometheus,
    { textfile: null, listen: { hostname: "::1", port: 9877 }, allowRemote: false },
  );
  assertEquals(
    validateConfig({ prometheus: { textfile: "/srv/x.prom", listen: null } }, SRC).prometheus,
    { textfile: "/srv/x.prom", listen: null, allowRemote: false },
  );
});

Deno.test("prometheus: listen addresses are one explicit IP and a port", () => {
  assertEquals(parseListenAddress("127.0.0.1:9877"), { hostname: "127.0.0.1", port: 9877 });
  assertEquals(parseListenAddress("localhost:80"), { hostname: "127.0.0.1", port: 80 });
  assertEquals(parseListenAddress("192.168.1.5:9100"), { hostname: "192.168.1.5", port: 9100 });
  assertEquals(parseListenAddress("[fd00::1]:1"), { hostname: "fd00::1", port: 1 });
  assertEquals(parseListenAddress("[::0.0.0.1]:1"), { hostname: "::0.0.0.1", port: 1 }, "::1");
  const bad: [string, string][] = [
    ["0.0.0.0:9877", "listens on every network"],
    ["[::]:9877", "listens on every network"],
    [":9877", "is not an IP address"],
    ["example.com:9877", '"example.com" is not an IP address'],
    ["::1:9877", "write ADDRESS:PORT"],
    ["127.0.0.1", "write ADDRESS:PORT"],
    ["127.0.0.1:0", "the port must be 1 to 65535"],
    ["127.0.0.1:65536", "the port must be 1 to 65535"],
    ["127.0.0.1:99999999", "write ADDRESS:PORT"],
    ["256.0.0.1:1", "is not an IP address"],
    // IPv4 in IPv6 form: the socket listens on the IPv4 address, the wildcard included.
    ["[::ffff:0.0.0.0]:9877", "listens on every network"],
    ["[::FFFF:0:0]:9877", "listens on every network"],
    ["[0:0:0:0:0:ffff:0000:0000]:9877", "listens on every network"],
    ["[::0.0.0.0]:9877", "listens on every network"],
    ["[::ffff:127.0.0.1]:9877", 'write the IPv4 address itself, like "127.0.0.1:9877"'],
    ["[::ffff:7f00:1]:9877", 'like "127.0.0.1:9877"'],
    ["[::ffff:192.0.2.9]:9877", 'like "192.0.2.9:9877"'],
    ["[::192.0.2.9]:9877", 'like "192.0.2.9:9877"'],
  ];
  for (const [text, part] of bad) {
    assertThrows(() => parseListenAddress(text), ConfigError, `--metrics-listen is "${text}"`);
    assertThrows(() => parseListenAddress(text), ConfigError, part);
  }
  // As a flag value the option name is already in commander's message.
  assertThrows(() => parseListenAddress("0.0.0.0:1", null), ConfigError, "That listens on");
});

Deno.test("prometheus: every bad value names the field, the value and the fix", () => {
  const cases: [unknown, string][] = [
    [{ promethues: {} }, 'Unknown key "promethues" in test.json: did you mean "prometheus"?'],
    [{ prometheus: "on" }, '"prometheus" is "on": it must be an object like'],
    [{ prometheus: [] }, '"prometheus" is []'],
    [
      { prometheus: { textfil: null } },
      'Unknown key "prometheus.textfil": did you mean "textfile"?',
    ],
    [
      { prometheus: { port: 1 } },
      'Unknown key "prometheus.port": known keys are textfile, listen, allow_remote',
    ],
    [{ prometheus: { allow_remote: "yes" } }, '"prometheus.allow_remote" is "yes": use true or'],
    [
      { prometheus: { listen: "[::ffff:0.0.0.0]:9877" } },
      '"prometheus.listen" is "[::ffff:0.0.0.0]:9877": that listens on every network',
    ],
    [{ prometheus: { textfile: "x.prom" } }, '"prometheus.textfile" is "x.prom": use an absolute'],
    [{ prometheus: { textfile: "/var/x.txt" } }, 'ending in ".prom" (node-exporter reads only'],
    [{ prometheus: { textfile: false } }, "or null for none"],
    [{ prometheus: { textfile: "/a/../b.prom" } }, '"." and ".." are not allowed'],
    [{ prometheus: { listen: 9877 } }, '"prometheus.listen" is 9877: use "ADDRESS:PORT"'],
    [{ prometheus: { listen: "0.0.0.0:9877" } }, '"prometheus.listen" is "0.0.0.0:9877": that'],
  ];
  for (const [raw, part] of cases) assertThrows(() => validateConfig(raw, SRC), ConfigError, part);
});

Deno.test("prometheus: /metrics on loopback only, unless the config says allow_remote", () => {
  const listenOf = (prometheus: unknown) => validateConfig({ prometheus }, SRC).prometheus.listen;
  assertEquals(listenOf({ listen: "127.0.0.53:1" }), { hostname: "127.0.0.53", port: 1 });
  assertEquals(listenOf({ listen: "[::1]:1" }), { hostname: "::1", port: 1 });
  for (const listen of ["192.0.2.7:9877", "[2001:db8::7]:9877", "10.1.2.3:9877"]) {
    const e = assertThrows(() => listenOf({ listen }), ConfigError);
    assertStringIncludes(e.message, `"prometheus.listen" is "${listen}", which is not a loopback`);
    assertStringIncludes(e.message, '"prometheus.allow_remote": true');
    assertStringIncludes(e.message, 'Use "127.0.0.1:9877"');
    assertEquals(listenOf({ listen, allow_remote: true })?.port, 9877);
    assertThrows(() => listenOf({ listen, allow_remote: false }), ConfigError, "not a loopback");
  }
  // The consent never extends to a wildcard.
  for (const listen of ["0.0.0.0:1", "[::]:1", "[::ffff:0.0.0.0]:1"]) {
    assertThrows(() => listenOf({ listen, allow_remote: true }), ConfigError, "every network");
  }
  // --metrics-listen is held to the same rule (run/mod.ts), named as the flag.
  assertThrows(
    () => checkListenAllowed({ hostname: "192.0.2.7", port: 1 }, false, "--metrics-listen"),
    ConfigError,
    '--metrics-listen is "192.0.2.7:1", which is not a loopback address',
  );
  checkListenAllowed({ hostname: "192.0.2.7", port: 1 }, true, "--metrics-listen");
});
