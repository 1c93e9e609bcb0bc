/**
 * A JSON Schema (2020-12) validator for the keywords schema/*.schema.json use: type,
 * const, enum, required, properties, additionalProperties, propertyNames, items, minimum,
 * maximum, pattern, oneOf and local $ref. Integers may be bigint (lib/exact_json.ts
 * parses counts beyond 2^53 so). A keyword it does not know is an error, never ignored:
 * a schema this cannot check must not pass silently. No npm validator is available here.
 */

// deno-lint-ignore no-explicit-any
type Schema = any;

const KNOWN = new Set([
  "$schema",
  "$id",
  "$defs",
  "$ref",
  "title",
  "description",
  "type",
  "const",
  "enum",
  "required",
  "properties",
  "additionalProperties",
  "propertyNames",
  "items",
  "minimum",
  "maximum",
  "pattern",
  "oneOf",
]);

function typeOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "bigint") return "integer";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  return typeof v;
}

function num(v: unknown): bigint | number {
  return typeof v === "bigint" ? v : Number(v);
}

/** Compares a number or bigint with a schema bound exactly (bounds may exceed 2^53). */
function cmp(v: number | bigint, bound: number | bigint): number {
  if (typeof v === "bigint" || typeof bound === "bigint" || !Number.isSafeInteger(bound)) {
    const a = typeof v === "bigint" ? v : BigInt(Math.trunc(v));
    const b = typeof bound === "bigint" ? bound : BigInt(Math.trunc(bound));
    return a < b ? -1 : a > b ? 1 : 0;
  }
  return v < bound ? -1 : v > bound ? 1 : 0;
}

/** Every way `value` breaks `schema`, as "path: problem"; empty when it conforms. */
export function validate(
  value: unknown,
  schema: Schema,
  root: Schema = schema,
  at = "$",
): string[] {
  for (const k of Object.keys(schema)) {
    if (!KNOWN.has(k)) return [`${at}: schema keyword "${k}" is not supported by this validator`];
  }
  if (schema.$ref) {
    const m = /^#\/\$defs\/(.+)$/.exec(schema.$ref);
    const target = m ? root.$defs?.[m[1]!] : undefined;
    if (!target) return [`${at}: cannot resolve ${schema.$ref}`];
    return validate(value, target, root, at);
  }
  const errors: string[] = [];
  const t = typeOf(value);
  if (schema.type !== undefined) {
    const types: string[] = Array.isArray(schema.type) ? schema.type : [schema.type];
    const ok = types.includes(t) || (t === "integer" && types.includes("number"));
    if (!ok) return [`${at}: is ${t}, expected ${types.join(" or ")}`];
  }
  if ("const" in schema && value !== schema.const) errors.push(`${at}: is not ${schema.const}`);
  if (schema.enum && !schema.enum.includes(value)) {
    errors.push(`${at}: ${JSON.stringify(value)} is not one of ${schema.enum.join(", ")}`);
  }
  if (schema.oneOf) {
    const passing = schema.oneOf.filter((s: Schema) => validate(value, s, root, at).length === 0);
    if (passing.length !== 1) errors.push(`${at}: matches ${passing.length} of oneOf, not 1`);
  }
  if (t === "integer" || t === "number") {
    const v = num(value);
    if (schema.minimum !== undefined && cmp(v, schema.minimum) < 0) {
      errors.push(`${at}: ${v} < minimum ${schema.minimum}`);
    }
    if (schema.maximum !== undefined && cmp(v, schema.maximum) > 0) {
      errors.push(`${at}: ${v} > maximum ${schema.maximum}`);
    }
  }
  if (t === "string" && schema.pattern && !new RegExp(schema.pattern, "u").test(value as string)) {
    errors.push(`${at}: ${JSON.stringify(value)} does not match ${schema.pattern}`);
  }
  if (t === "array" && schema.items) {
    (value as unknown[]).forEach((item, i) =>
      errors.push(...validate(item, schema.items, root, `${at}[${i}]`))
    );
  }
  if (t === "object") {
    errors.push(...validateObject(value as Record<string, unknown>, schema, root, at));
  }
  return errors;
}

function validateObject(
  o: Record<string, unknown>,
  schema: Schema,
  root: Schema,
  at: string,
): string[] {
  const errors: string[] = [];
  for (const r of schema.required ?? []) {
    if (!(r in o)) errors.push(`${at}: "${r}" is missing`);
  }
  for (const [k, v] of Object.entries(o)) {
    const where = `${at}.${k}`;
    if (schema.propertyNames) {
      errors.push(...validate(k, schema.propertyNames, root, `${where} (name)`));
    }
    const p = schema.properties?.[k];
    if (p) errors.push(...validate(v, p, root, where));
    else if (schema.additionalProperties === false) errors.push(`${where}: not allowed`);
    else if (typeof schema.additionalProperties === "object") {
      errors.push(...validate(v, schema.additionalProperties, root, where));
    }
  }
  return errors;
}
