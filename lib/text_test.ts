import { printable, terminalJson } from "./text.ts";
import { assertEquals } from "./test_assert.ts";

/** Written out, not shared with text.ts: the test must not trust the code's own list. */
function controlIn(text: string): number | null {
  for (const ch of text) {
    const c = ch.codePointAt(0)!;
    if (c < 0x20 || (c >= 0x7f && c <= 0x9f) || (c >= 0x202a && c <= 0x202e)) return c;
    if ((c >= 0x2066 && c <= 0x2069) || c === 0x200e || c === 0x200f || c === 0x61c) return c;
  }
  return null;
}

Deno.test("printable shows every control character as a visible escape", () => {
  assertEquals(printable("stb\x1b]0;pwned\x07"), "stb\\x1b]0;pwned\\x07");
  assertEquals(printable("a\nb\tc\rd\x00\x7f"), "a\\x0ab\\x09c\\x0dd\\x00\\x7f");
  // C1 (CSI on 8-bit terminals) and the bidi overrides that reorder a line.
  assertEquals(printable("\u009b31mred"), "\\x9b31mred");
  assertEquals(printable("evil\u202Eexe.txt"), "evil\\u202eexe.txt");
  // Everything else passes as it is, wide and combining characters included.
  assertEquals(
    printable("host-agent ↓ 1.00 MiB/s · Zürich 東京 e\u0301"),
    "host-agent ↓ 1.00 MiB/s · Zürich 東京 e\u0301",
  );
  for (let c = 0; c < 0x3000; c++) {
    const out = printable(String.fromCharCode(c));
    if (controlIn(out) !== null) throw new Error(`U+${c.toString(16)} passed through`);
  }
});

Deno.test("terminalJson escapes what JSON.stringify leaves raw, and stays the same JSON", () => {
  const value = { comm: "a\u009b31m\u202e\x1b[2J\x7f", list: [1, "x"] };
  const json = terminalJson(JSON.stringify(value, null, 2));
  if (controlIn(json.replaceAll("\n", "")) !== null) throw new Error(json);
  assertEquals(JSON.parse(json), value);
  // The layout's newlines are not escaped.
  assertEquals(json.split("\n").length, JSON.stringify(value, null, 2).split("\n").length);
});
