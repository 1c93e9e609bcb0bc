import { assertEquals, assertThrows } from "./test_assert.ts";
import { ContractError, type CountersV1, parseCounters, serializeCounters } from "./contract.ts";

const sample: CountersV1 = {
  schema: 1,
  backend: "ebpf",
  boot_id: "6f1c0a52-0000-4000-8000-000000000000",
  started_at: 1795000000,
  rx_bytes_total: 123,
  tx_bytes_total: 456,
  rx_packets_total: 7,
  tx_packets_total: 8,
  ts_monotonic: 12345.67,
  ts_unix: 1795000000.12,
  interval_s: 0.5,
  services: {
    server: {
      rx_bytes_total: 1,
      tx_bytes_total: 2,
      rx_packets_total: 0,
      tx_packets_total: 0,
      cgroup: "/user.slice/x",
      present: true,
    },
  },
};

Deno.test("serialise then parse is the identity, one line", () => {
  const text = serializeCounters(sample);
  assertEquals(text.endsWith("\n") && !text.slice(0, -1).includes("\n"), true);
  assertEquals(parseCounters(text), sample);
});

Deno.test("the original three-field contract is still accepted", () => {
  const c = parseCounters('{"rx_bytes_total": 1, "tx_bytes_total": 2, "ts_monotonic": 3.5}');
  assertEquals([c.rx_bytes_total, c.tx_bytes_total, c.ts_monotonic, c.backend], [
    1,
    2,
    3.5,
    "unknown",
  ]);
});

Deno.test("bad files are refused with the field named", () => {
  const cases: [string, string][] = [
    ["", "empty"],
    ["{", "not valid JSON"],
    ["[1]", "not a JSON object"],
    ["null", "not a JSON object"],
    ['{"schema": 2, "rx_bytes_total": 1, "tx_bytes_total": 1, "ts_monotonic": 1}', "schema 2"],
    ['{"rx_bytes_total": -1, "tx_bytes_total": 1, "ts_monotonic": 1}', '"rx_bytes_total" is -1'],
    ['{"rx_bytes_total": 1.5, "tx_bytes_total": 1, "ts_monotonic": 1}', '"rx_bytes_total" is 1.5'],
    ['{"rx_bytes_total": "1", "tx_bytes_total": 1, "ts_monotonic": 1}', '"rx_bytes_total" is "1"'],
    [
      '{"rx_bytes_total": 1, "tx_bytes_total": 1e400, "ts_monotonic": 1}',
      '"tx_bytes_total" is null',
    ],
    ['{"rx_bytes_total": 1, "tx_bytes_total": 1}', '"ts_monotonic" is missing'],
    ["[".repeat(100000), "not valid JSON"],
  ];
  for (const [text, want] of cases) assertThrows(() => parseCounters(text), ContractError, want);
  assertThrows(() => parseCounters(" ".repeat((1 << 20) + 1)), ContractError, "over the");
});

Deno.test("schema file lists exactly the fields the serialiser writes", () => {
  const schema = JSON.parse(
    Deno.readTextFileSync(new URL("../schema/counters.schema.json", import.meta.url)),
  );
  assertEquals(
    Object.keys(schema.properties).sort(),
    // The optional fields too: destinations and events_dropped_total (ebpf only).
    [
      ...Object.keys(sample),
      "backend_fallback_reason",
      "destinations",
      "events_dropped_total",
    ].sort(),
  );
  assertEquals(
    Object.keys(schema.properties.services.additionalProperties.properties).sort(),
    Object.keys(sample.services.server).sort(),
  );
});
