/**
 * Text from files on its way to a terminal. counters.json and events.jsonl carry strings
 * that processes outside root's control chose: a process in a service cgroup sets its own
 * `comm`, and a file swapped in can say anything. Printed raw, an escape sequence in such a
 * string moves the cursor, retitles the window or rewrites what an admin reads. Every
 * reader (graph, status, events) passes file text through `printable` before it prints it,
 * and its --json output through `terminalJson`.
 */

/**
 * C0 controls, DEL, C1 controls (0x9b is CSI on terminals that take 8-bit controls) and
 * the bidirectional overrides and isolates (they reorder what follows on the line).
 */
// deno-lint-ignore no-control-regex -- matching control characters is the point
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/**
 * `text` with every control character shown as a visible escape ("\x1b", "\u202e"), so
 * nothing in it reaches the terminal as a control and an admin still sees it was there.
 */
export function printable(text: string): string {
  return text.replace(UNSAFE, escapeChar);
}

function escapeChar(c: string): string {
  const code = c.charCodeAt(0);
  return code <= 0xff ? `\\x${hex(code, 2)}` : `\\u${hex(code, 4)}`;
}

function hex(n: number, width: number): string {
  return n.toString(16).padStart(width, "0");
}

/** What JSON.stringify leaves raw inside strings: DEL, C1 and the bidi controls. */
const UNSAFE_IN_JSON = /[\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/**
 * JSON text made safe for a terminal: JSON.stringify escapes C0 controls in strings but
 * writes DEL, C1 and the bidi controls raw; they become \uXXXX escapes, which every JSON
 * reader decodes to the same string. The layout's own newlines stay.
 */
export function terminalJson(json: string): string {
  return json.replace(UNSAFE_IN_JSON, (c) => `\\u${hex(c.charCodeAt(0), 4)}`);
}

/** Whether `text` holds a character `printable` would escape (for checks of output). */
export function hasControl(text: string): boolean {
  return text.search(UNSAFE) >= 0;
}
