import { buildProgram } from "../main.ts";
import { renderManpage, roff } from "./manpage.ts";
import { describeProgram } from "./model.ts";
import { assert, assertEquals } from "../lib/test_assert.ts";

const program = buildProgram();
const page = renderManpage(describeProgram(program), "test");

async function run(argv: string[], env: Record<string, string> = {}) {
  const o = await new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    stdout: "piped",
    stderr: "piped",
    env,
  }).output();
  const dec = new TextDecoder();
  return { ok: o.success, out: dec.decode(o.stdout), err: dec.decode(o.stderr) };
}

Deno.test("roff: literal text stays literal", () => {
  assertEquals(roff("--dry-run"), "\\-\\-dry\\-run");
  assertEquals(roff("a\\b `c` 'd'"), "a\\eb \\(gac\\(ga \\(aqd\\(aq");
  assertEquals(roff(".hidden\n'also"), "\\&.hidden\n\\(aqalso");
  assertEquals(roff("→"), "\\[u2192]");
});

Deno.test("manpage: every subcommand's --help is in it, option by option", () => {
  for (const cmd of program.commands) {
    if (cmd.name() === "verify-probe") continue;
    const help = cmd.helpInformation();
    assert(page.includes(`.SS "${roff(`stb-netacct ${cmd.name()}`)}`), `no section ${cmd.name()}`);
    // Each option's left column, exactly as --help prints it.
    const options = help.split("Options:\n")[1]!.split("\n")
      .map((l) => /^ {2}(-\S.*?)(?:\s{2,}|$)/.exec(l)?.[1])
      .filter((t): t is string => t !== undefined);
    assert(options.length > 0, `no options parsed from ${cmd.name()} --help`);
    for (const term of options) {
      const plain = page.replace(/\\f[BIR]/g, "");
      assert(plain.includes(roff(term)), `${cmd.name()}: option ${term} missing`);
    }
  }
});

Deno.test("manpage: groff and man render it without a warning", async () => {
  const dir = await Deno.makeTempDir({ prefix: "stb-man-" });
  try {
    await Deno.writeTextFile(`${dir}/stb-netacct.1`, page);
    const groff = await run(["groff", "-man", "-Tutf8", "-ww", "-z", `${dir}/stb-netacct.1`]);
    assert(groff.ok, groff.err);
    assertEquals(groff.err, "", "groff warnings");
    const man = await run(["man", "--warnings", "-l", `${dir}/stb-netacct.1`], {
      MANWIDTH: "80",
    });
    assert(man.ok, man.err);
    assertEquals(man.err, "", "man warnings");
    assert(/uninstall \[options\]/.test(man.out), man.out.slice(0, 400));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
