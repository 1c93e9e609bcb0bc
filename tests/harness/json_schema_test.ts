import { assertEquals, assertStringIncludes } from "../../lib/test_assert.ts";
import { validate } from "./json_schema.ts";

const SCHEMA = {
  type: "object",
  required: ["n", "s"],
  additionalProperties: false,
  $defs: { count: { type: "integer", minimum: 0, maximum: 9223372036854775807n } },
  properties: {
    n: { $ref: "#/$defs/count" },
    s: { type: "string", pattern: "^a+$" },
    e: { enum: ["x", "y"] },
    o: { oneOf: [{ type: "null" }, { type: "string" }] },
    m: {
      type: "object",
      propertyNames: { pattern: "^[a-z]+$" },
      additionalProperties: { type: "integer" },
    },
    l: { type: "array", items: { const: 1 } },
  },
};

Deno.test("json schema validator: accepts what conforms, names every breach", () => {
  assertEquals(validate({ n: 5n, s: "aa", e: "x", o: null, m: { ab: 1 }, l: [1, 1] }, SCHEMA), []);
  const bad = validate(
    { n: -1, s: "b", e: "z", o: 3, m: { Ab: 1.5 }, l: [2], extra: true },
    SCHEMA,
  );
  for (
    const want of [
      "$.n: -1 < minimum 0",
      '$.s: "b" does not match',
      '$.e: "z" is not one of',
      "$.o: matches 0 of oneOf",
      "$.m.Ab (name)",
      "$.m.Ab: is number, expected integer",
      "$.l[0]: is not 1",
      "$.extra: not allowed",
    ]
  ) assertStringIncludes(bad.join("\n"), want);
  assertEquals(validate({ s: "a", n: 2n ** 63n }, SCHEMA), [
    "$.n: 9223372036854775808 > maximum 9223372036854775807",
  ]);
  assertEquals(validate({}, SCHEMA).sort(), ['$: "n" is missing', '$: "s" is missing']);
  assertEquals(validate(1, { format: "x" }), [
    '$: schema keyword "format" is not supported by this validator',
  ]);
});
