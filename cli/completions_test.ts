import { buildProgram } from "../main.ts";
import { renderCompletions, SHELLS } from "./completions.ts";
import { describeProgram } from "./model.ts";
import { assert, assertEquals } from "../lib/test_assert.ts";

const model = describeProgram(buildProgram());

async function has(tool: string): Promise<boolean> {
  const o = await new Deno.Command("sh", { args: ["-c", `command -v ${tool}`], stdout: "null" })
    .output();
  return o.success;
}

async function sh(argv: string[], stdin?: string): Promise<{ code: number; out: string }> {
  const p = new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = p.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const o = await p.output();
  const dec = new TextDecoder();
  return { code: o.code, out: dec.decode(o.stdout) + dec.decode(o.stderr) };
}

Deno.test("completions: the model is the whole program", () => {
  const names = model.commands.map((c) => c.name);
  for (const c of ["run", "graph", "events", "install", "uninstall", "completions", "manpage"]) {
    assert(names.includes(c), `${c} missing from ${names}`);
  }
  assert(!names.includes("verify-probe"), "hidden commands stay hidden");
  const run = model.commands.find((c) => c.name === "run")!;
  const backend = run.options.find((o) => o.long === "--backend")!;
  assertEquals(backend.choices, ["auto", "ebpf", "nft", "iptables"]);
  assertEquals(backend.value, "name");
  assert(model.commands.find((c) => c.name === "status")!.helpAfter.includes("Exit status"));
});

for (const shell of SHELLS) {
  Deno.test(`completions ${shell}: every subcommand and option, accepted by ${shell}`, async () => {
    const text = renderCompletions(model, shell, "test");
    for (const c of model.commands) {
      assert(new RegExp(`\\b${c.name}\\b`).test(text), `${shell}: no subcommand ${c.name}`);
      for (const o of c.options) {
        const long = o.long!.replace(/^--/, "");
        assert(text.includes(long), `${shell}: no option ${o.long} of ${c.name}`);
      }
    }
    const check = { bash: ["bash", "-n"], zsh: ["zsh", "-n"], fish: ["fish", "--no-execute"] }[
      shell
    ];
    if (!(await has(shell))) {
      console.log(`${shell} is not installed: syntax not checked (make test-deps installs it)`);
      return;
    }
    const dir = await Deno.makeTempDir({ prefix: "stb-compl-" });
    try {
      await Deno.writeTextFile(`${dir}/script`, text);
      const r = await sh([...check, `${dir}/script`]);
      assertEquals(r.code, 0, `${shell} refused the script: ${r.out}`);
      assertEquals(r.out, "");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

/** What bash's completion offers for the words typed so far (the last one is completed). */
async function bashComplete(line: string[]): Promise<string[]> {
  const script = renderCompletions(model, "bash", "test") +
    `COMP_WORDS=(${line.map((w) => `'${w}'`).join(" ")}); COMP_CWORD=${line.length - 1}\n` +
    `_stb_netacct; printf '%s\\n' "\${COMPREPLY[@]}"\n`;
  const r = await sh(["bash", "-c", script]);
  assertEquals(r.code, 0, r.out);
  return r.out.split("\n").filter((l) => l !== "");
}

Deno.test("completions bash: commands, options, choices and files complete", async () => {
  assertEquals(await bashComplete(["stb-netacct", "un"]), ["uninstall"]);
  assertEquals(await bashComplete(["stb-netacct", "run", "--backend", ""]), [
    "auto",
    "ebpf",
    "nft",
    "iptables",
  ]);
  assertEquals(await bashComplete(["stb-netacct", "install", "--dr"]), ["--dry-run"]);
  assertEquals(await bashComplete(["stb-netacct", "completions", "z"]), ["zsh"]);
  assertEquals(await bashComplete(["stb-netacct", "help", "sta"]), ["status"]);
  const files = await bashComplete(["stb-netacct", "run", "--config", "/etc/host"]);
  assert(files.includes("/etc/hostname"), `file names: ${files}`);
});

Deno.test({
  name: "completions fish: complete -C offers what the program accepts",
  ignore: !(await has("fish")),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "stb-compl-fish-" });
    try {
      await Deno.writeTextFile(`${dir}/c.fish`, renderCompletions(model, "fish", "test"));
      const r = await sh([
        "fish",
        "-c",
        `source ${dir}/c.fish; complete -C 'stb-netacct run --backend '; echo SEP; ` +
        `complete -C 'stb-netacct uni'`,
      ]);
      const [backends, commands] = r.out.split("SEP\n");
      assertEquals(backends!.trim().split("\n").map((l) => l.split("\t")[0]).sort(), [
        "auto",
        "ebpf",
        "iptables",
        "nft",
      ]);
      assertEquals(commands!.trim().split("\t")[0], "uninstall");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
