/**
 * Reading what `deno test` left in the guest's results directory: the JUnit report (which
 * tests ran and how they ended: the authoritative source) and the default "pretty" output
 * (what each test printed, which JUnit leaves out, and which tests finished before a run that
 * never wrote its report was cut off). Pure functions, tested against captured output in
 * testdata/.
 */

export type CaseStatus = "ok" | "FAILED" | "ignored";

export interface GuestCase {
  name: string;
  /** The test file as deno names it, e.g. "./tests/e2e_test.ts". */
  file: string;
  status: CaseStatus;
  seconds: number;
  /** The error (and stack) of a failed test, its failed steps' included. */
  failure: string;
}

const ENTITIES: Record<string, string> = {
  amp: "&",
  lt: "<",
  gt: ">",
  quot: '"',
  apos: "'",
};

function unescapeXml(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (whole, ref: string) => {
    if (ref[0] === "#") {
      const code = ref[1] === "x" || ref[1] === "X"
        ? parseInt(ref.slice(2), 16)
        : parseInt(ref.slice(1), 10);
      return String.fromCodePoint(code);
    }
    return ENTITIES[ref] ?? whole;
  });
}

function attributes(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  // Both groups always take part in a match.
  for (const m of text.matchAll(/([\w:-]+)="([^"]*)"/g)) out[m[1]!] = unescapeXml(m[2]!);
  return out;
}

/**
 * The test cases of a JUnit report as `deno test --junit-path` writes it. Deno lists a test's
 * steps as cases named "<test> > <step>" right after the test; they are folded into their
 * test (as deno's own summary counts them), their failures appended to its failure.
 */
export function parseJunit(xml: string): GuestCase[] {
  const cases: GuestCase[] = [];
  const re = /<testcase\b([^>]*?)(?:\/>|>([\s\S]*?)<\/testcase>)/g;
  for (const m of xml.matchAll(re)) {
    const attrs = attributes(m[1] ?? "");
    const body = m[2] ?? "";
    const failure = /<failure\b([^>]*?)(?:\/>|>([\s\S]*?)<\/failure>)/.exec(body);
    const c: GuestCase = {
      name: attrs.name ?? "",
      file: attrs.classname ?? "",
      status: failure ? "FAILED" : /<skipped\b/.test(body) ? "ignored" : "ok",
      seconds: Number(attrs.time ?? 0),
      failure: failure
        ? unescapeXml(failure[2] ?? "") || attributes(failure[1] ?? "").message || "failed"
        : "",
    };
    const parent = cases.at(-1);
    if (parent && parent.file === c.file && c.name.startsWith(`${parent.name} > `)) {
      if (c.status === "FAILED") {
        parent.failure += `\n${c.name.slice(parent.name.length + 3)}: ${c.failure}`;
      }
      continue;
    }
    cases.push(c);
  }
  return cases;
}

/** Deno frames a test's output so; "post-test" when it came after the test's own code ran. */
const OUTPUT_START = /^------- (?:post-test )?output -------$/;
const OUTPUT_END = /^----- (?:post-test )?output end -----$/;

/**
 * What each test printed, from deno's pretty output (NO_COLOR): the lines between
 * "------- output -------" and "----- output end -----" after "<name> ...".
 */
export function testOutputs(pretty: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const lines = pretty.split("\n");
  let current: string[] | null = null;
  for (const [i, line] of lines.entries()) {
    if (current) {
      if (OUTPUT_END.test(line)) current = null;
      else current.push(line);
      continue;
    }
    const before = i > 0 ? lines[i - 1] : undefined;
    if (OUTPUT_START.test(line) && before?.endsWith(" ...")) {
      const name = before.slice(0, -4).trim();
      current = out.get(name) ?? [];
      out.set(name, current);
    }
  }
  return out;
}

const RESULT_LINE = /^(\S.*?) \.\.\. (ok|FAILED|ignored)(?: \(due to [^)]*\))? \(([^)]*)\)$/;
const RUNNING_LINE = /^running \d+ tests? from (\S+)$/;

/** A top-level result line of deno's pretty output ("<name> ... ok (1m2s)"), or null. */
export function parseResultLine(line: string): { name: string; status: CaseStatus } | null {
  const m = RESULT_LINE.exec(line);
  return m?.[1] && m[2] ? { name: m[1], status: m[2] as CaseStatus } : null;
}

/**
 * The tests that finished, from the pretty output alone: what is known of a run cut off
 * before deno wrote its JUnit report. Failures carry no error text (deno prints it at the
 * end); `unfinished` is the test that was running.
 */
export function finishedFromPretty(pretty: string): { cases: GuestCase[]; unfinished: string } {
  const cases: GuestCase[] = [];
  let file = "", unfinished = "";
  for (const line of pretty.split("\n")) {
    const running = RUNNING_LINE.exec(line);
    if (running?.[1]) file = running[1];
    const r = parseResultLine(line);
    if (r) {
      cases.push({ name: r.name, file, status: r.status, seconds: 0, failure: "" });
      unfinished = "";
    } else if (/^\S.* \.\.\.$/.test(line)) {
      unfinished = line.slice(0, -4);
    }
  }
  return { cases, unfinished };
}

/** "1m22s" / "8.3s" for a duration in seconds, as deno prints them. */
export function formatSeconds(s: number): string {
  if (s < 59.95) return `${s.toFixed(1)}s`;
  const whole = Math.round(s);
  return `${Math.floor(whole / 60)}m${String(whole % 60).padStart(2, "0")}s`;
}
