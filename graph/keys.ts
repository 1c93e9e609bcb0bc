/**
 * The live graph's keys, decoded from what a terminal in raw mode sends. Pure: bytes in,
 * actions out, and the view they change, so every key can be tested without a terminal.
 *
 *   q, Esc, Ctrl-C  quit          p, space  pause / resume
 *   b               bits / bytes  s         show / hide the per-service lines
 *
 * A terminal sends a lone ESC for the Esc key, and ESC followed by more in the same read
 * for arrow and function keys (ESC [ A) or Alt+key: those are skipped, never read as Esc.
 */

export type KeyAction = "quit" | "pause" | "bits" | "services";

const ESC = 0x1b;
const KEYS: Record<string, KeyAction> = {
  "q": "quit",
  "Q": "quit",
  "\x03": "quit", // Ctrl-C: raw mode delivers it as a byte, not SIGINT
  "\x04": "quit", // Ctrl-D
  "p": "pause",
  "P": "pause",
  " ": "pause",
  "b": "bits",
  "B": "bits",
  "s": "services",
  "S": "services",
};

/** Where the escape sequence starting at `i` (an ESC) ends (exclusive). */
function sequenceEnd(bytes: Uint8Array, i: number): number {
  const next = bytes[i + 1];
  if (next === 0x5b) { // CSI: ESC [ parameters, then one final byte 0x40-0x7e
    let j = i + 2;
    while (j < bytes.length && !(bytes[j]! >= 0x40 && bytes[j]! <= 0x7e)) j++; // j < length
    return Math.min(bytes.length, j + 1);
  }
  if (next === 0x4f) return Math.min(bytes.length, i + 3); // SS3: ESC O x (F1-F4, keypad)
  return Math.min(bytes.length, i + 2); // Alt+key
}

/** The actions in one read from the terminal, in order. */
export function decodeKeys(bytes: Uint8Array): KeyAction[] {
  if (bytes.length === 1 && bytes[0] === ESC) return ["quit"];
  const out: KeyAction[] = [];
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i]!; // i < length
    if (b === ESC) {
      i = sequenceEnd(bytes, i);
      continue;
    }
    const action = KEYS[String.fromCharCode(b)];
    if (action !== undefined) out.push(action);
    i++;
  }
  return out;
}

/** What the keys change: how the frame is drawn, not what is counted. */
export interface View {
  paused: boolean;
  bits: boolean;
  services: boolean;
}

/** The view after `action` (quit is the caller's). */
export function applyKey(view: View, action: KeyAction): View {
  switch (action) {
    case "pause":
      return { ...view, paused: !view.paused };
    case "bits":
      return { ...view, bits: !view.bits };
    case "services":
      return { ...view, services: !view.services };
    default:
      return view;
  }
}
