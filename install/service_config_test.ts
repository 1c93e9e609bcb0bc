import { ConfigError, validateConfig } from "../lib/config.ts";
import { UsageError } from "../lib/errors.ts";
import { serviceFeatures } from "./service_config.ts";
import { assertEquals, assertStringIncludes, assertThrows } from "../lib/test_assert.ts";

const SOURCE = '"/etc/stb-netacct/config.json"';
const features = (raw: Record<string, unknown>) =>
  serviceFeatures(validateConfig(raw, SOURCE), SOURCE);

Deno.test("service config: the defaults open node-exporter's directory and no socket", () => {
  assertEquals(features({}), { textfileDir: "/var/lib/prometheus/node-exporter", listen: null });
  assertEquals(features({ prometheus: { textfile: null } }).textfileDir, null);
  assertEquals(
    features({ prometheus: { textfile: "/run/stb-netacct/x.prom" } }).textfileDir,
    null,
    "the runtime directory is writable already",
  );
  assertEquals(
    features({ prometheus: { textfile: "/srv/metrics/stb.prom" } }).textfileDir,
    "/srv/metrics",
  );
});

Deno.test("service config: /metrics on loopback gets its family, elsewhere only on purpose", () => {
  assertEquals(features({ prometheus: { listen: "127.0.0.1:9877" } }).listen, {
    family: "AF_INET",
    remote: false,
  });
  assertEquals(features({ prometheus: { listen: "127.0.0.53:9877" } }).listen?.remote, false);
  assertEquals(features({ prometheus: { listen: "[::1]:9877" } }).listen, {
    family: "AF_INET6",
    remote: false,
  });
  assertEquals(features({ prometheus: { listen: "localhost:9877" } }).listen?.family, "AF_INET");
  for (const listen of ["192.0.2.7:9877", "[2001:db8::7]:9877", "[::ffff:0.0.0.0]:9877"]) {
    const e = assertThrows(() => features({ prometheus: { listen } }), ConfigError);
    assertStringIncludes(e.message, '"prometheus.listen" is');
  }
  // The config's own consent, the same key `run` obeys.
  assertEquals(
    features({ prometheus: { listen: "192.0.2.7:9877", allow_remote: true } }).listen,
    { family: "AF_INET", remote: true },
  );
  assertEquals(
    features({ prometheus: { listen: "127.0.0.1:9877", allow_remote: true } }).listen?.remote,
    false,
    "loopback stays loopback",
  );
});

Deno.test("service config: what the confined service cannot write is refused with the fix", () => {
  assertThrows(
    () => features({ output: "/var/tmp/counters.json" }),
    UsageError,
    '"output" is "/var/tmp/counters.json" in "/etc/stb-netacct/config.json", but the ' +
      'hardened service may only write /run/stb-netacct/: set "output" to ' +
      '"/run/stb-netacct/counters.json"',
  );
  assertThrows(() => features({ output: "/run/stb-netacct/sub/c.json" }), UsageError, '"output"');
  for (
    const textfile of ["/etc/stb.prom", "/var/lib/stb.prom", "/var/lib/a b/x.prom", "/tmp/x.prom"]
  ) {
    assertThrows(
      () => features({ prometheus: { textfile } }),
      UsageError,
      `"prometheus.textfile" is ${JSON.stringify(textfile)} in ${SOURCE}`,
    );
  }
  assertThrows(
    () => features({ prometheus: { textfile: "/etc/stb.prom" } }),
    UsageError,
    'set "prometheus.textfile" to a file in node-exporter\'s textfile directory',
  );
});
