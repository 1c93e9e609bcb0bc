import { BACKEND_CHOICES } from "../backends/mod.ts";
import {
  quoteExecArg,
  renderUnit,
  sandboxFor,
  TEXTFILE_GROUP,
  UNIT_NAME,
  type UnitFeatures,
} from "./unit.ts";
import { denoFlagsFromLauncher, parseDenoFlagsFile, renderLauncher } from "./launcher.ts";
import { assert, assertEquals, assertThrows } from "../lib/test_assert.ts";

/** Highest `systemd-analyze security` exposure the issue accepts ("OK"). */
const MAX_EXPOSURE = 2.0;

async function analyze(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const o = await new Deno.Command("systemd-analyze", { args, stdout: "piped", stderr: "piped" })
    .output();
  const dec = new TextDecoder();
  return { code: o.code, out: dec.decode(o.stdout), err: dec.decode(o.stderr) };
}

/** Every kind of unit install renders: each backend, with and without the config's features. */
const VARIANTS: {
  name: string;
  backend: typeof BACKEND_CHOICES[number];
  features: UnitFeatures;
}[] = BACKEND_CHOICES.flatMap((backend) =>
  [null, "/var/lib/prometheus/node-exporter"].flatMap((textfileDir) =>
    [
      null,
      { family: "AF_INET" as const, remote: false },
      { family: "AF_INET6" as const, remote: false },
      { family: "AF_INET" as const, remote: true },
      { family: "AF_INET6" as const, remote: true },
    ].map((listen) => ({
      name: `${backend}, textfile ${textfileDir ? "on" : "off"}, listen ${
        listen ? `${listen.family}${listen.remote ? " remote" : " loopback"}` : "off"
      }`,
      backend,
      features: { textfileDir, listen },
    }))
  )
);

/** A unit on disk whose ExecStart names a real executable, as verify insists. */
async function withUnit(
  variant: typeof VARIANTS[number],
  fn: (unitPath: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "stb-unit-" });
  try {
    const bin = `${dir}/stb-netacct`;
    await Deno.writeTextFile(bin, "#!/bin/sh\nexit 0\n", { mode: 0o755 });
    const unit = `${dir}/${UNIT_NAME}`;
    await Deno.writeTextFile(
      unit,
      renderUnit(variant.backend, bin, { version: "test", features: variant.features }),
    );
    await fn(unit);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

for (const variant of VARIANTS) {
  Deno.test(`unit for ${variant.name}: systemd-analyze verify prints nothing`, async () => {
    await withUnit(variant, async (unit) => {
      const r = await analyze(["verify", unit]);
      assertEquals(r.out + r.err, "", `verify output for ${variant.name}`);
      assertEquals(r.code, 0);
    });
  });

  Deno.test(`unit for ${variant.name}: exposure <= ${MAX_EXPOSURE}`, async () => {
    await withUnit(variant, async (unit) => {
      const r = await analyze([
        "security",
        "--offline=true",
        `--threshold=${MAX_EXPOSURE * 10}`,
        "--no-pager",
        unit,
      ]);
      const m = r.out.match(/Overall exposure level for \S+: ([0-9.]+) (\S+)/);
      assert(m !== null, `no exposure line in: ${r.out.slice(-300)} ${r.err}`);
      const score = Number(m[1]);
      console.log(`exposure ${variant.name}: ${score} ${m[2]}`);
      assert(score <= MAX_EXPOSURE, `exposure ${score} > ${MAX_EXPOSURE} for ${variant.name}`);
      assertEquals(r.code, 0, r.err);
    });
  });
}

Deno.test("sandbox: each backend gets only its own capabilities, families and syscalls", () => {
  assertEquals(sandboxFor("ebpf"), {
    capabilities: ["CAP_BPF", "CAP_CHOWN", "CAP_NET_ADMIN", "CAP_PERFMON"],
    families: [],
    syscalls: ["bpf"],
  });
  for (const b of ["nft", "iptables"] as const) {
    assertEquals(sandboxFor(b), {
      capabilities: ["CAP_CHOWN", "CAP_NET_ADMIN"],
      families: ["AF_NETLINK"],
      syscalls: [],
    });
  }
  assertEquals(sandboxFor("auto").capabilities, sandboxFor("ebpf").capabilities);
  assertEquals(sandboxFor("auto").families, ["AF_NETLINK"]);
});

Deno.test("renderUnit: ExecStart, directories and no socket family for ebpf", () => {
  const u = renderUnit("ebpf", "/usr/local/bin/stb-netacct");
  const lines = u.split("\n");
  const has = (l: string) => assert(lines.includes(l), `missing line ${l}\n${u}`);
  has(
    "ExecStart=/usr/local/bin/stb-netacct run --backend ebpf --config /etc/stb-netacct/config.json " +
      "--state /var/lib/private/stb-netacct/state.json",
  );
  has("Type=notify");
  has("NotifyAccess=main");
  has("Restart=on-failure");
  has("RuntimeDirectory=stb-netacct");
  has("RuntimeDirectoryMode=0755");
  has("StateDirectory=stb-netacct");
  has("RestrictAddressFamilies=AF_UNIX");
  has("SystemCallFilter=@system-service bpf");
  has("AmbientCapabilities=CAP_BPF CAP_CHOWN CAP_NET_ADMIN CAP_PERFMON");
  const nft = renderUnit("nft", "/usr/local/bin/stb-netacct").split("\n");
  assert(nft.includes("RestrictAddressFamilies=AF_UNIX AF_NETLINK"));
  assert(nft.includes("SystemCallFilter=@system-service"));
  assertThrows(() => renderUnit("nft", "stb-netacct"), Error, "absolute");
  assert(!u.includes("IPAddressAllow"), "no IP at all without /metrics");
  assert(!u.includes("SupplementaryGroups"), "no group without a textfile");
});

Deno.test("renderUnit: the textfile directory and /metrics are opened only as far as asked", () => {
  const lines = (features: UnitFeatures) =>
    renderUnit("nft", "/usr/local/bin/stb-netacct", { features }).split("\n");
  const textfile = lines({ textfileDir: "/var/lib/prometheus/node-exporter", listen: null });
  assert(textfile.includes("ReadWritePaths=/run/stb-netacct"));
  assert(textfile.includes("ReadWritePaths=-/var/lib/prometheus/node-exporter"));
  assert(textfile.includes(`SupplementaryGroups=${TEXTFILE_GROUP}`));
  assert(textfile.includes("RestrictAddressFamilies=AF_UNIX AF_NETLINK"));
  const v4 = lines({ textfileDir: null, listen: { family: "AF_INET", remote: false } });
  assert(v4.includes("RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET"));
  assert(v4.includes("IPAddressDeny=any") && v4.includes("IPAddressAllow=localhost"));
  assert(!v4.includes("ReadWritePaths=-/var/lib/prometheus/node-exporter"));
  assert(v4.includes("ReadWritePaths=-/var/lib/stb-netacct-history"), "history, always");
  const v6 = lines({ textfileDir: null, listen: { family: "AF_INET6", remote: false } });
  assert(v6.includes("RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET6"));
  const remote = lines({ textfileDir: null, listen: { family: "AF_INET", remote: true } });
  assert(remote.includes("IPAddressAllow=any"));
});

Deno.test("quoteExecArg: specifiers, variables and blanks survive systemd's parsing", () => {
  assertEquals(quoteExecArg("/usr/bin/x"), "/usr/bin/x");
  assertEquals(quoteExecArg("/opt/50%/x"), "/opt/50%%/x");
  assertEquals(quoteExecArg("/opt/$HOME"), "/opt/$$HOME");
  assertEquals(quoteExecArg("/opt/my dir/x"), '"/opt/my dir/x"');
  assertEquals(quoteExecArg('/opt/a"b'), '"/opt/a\\"b"');
  assertThrows(() => quoteExecArg("/a\nb"), Error, "control character");
});

Deno.test("deno flags: file and command line parse to the same flags", () => {
  const perms = parseDenoFlagsFile(
    "# c\n--allow-read\n\n--allow-run=nft,ip\n--v8-flags=--single-threaded,--max-semi-space-size=1\n",
  );
  assertEquals(perms, [
    "--allow-read",
    "--allow-run=nft,ip",
    "--v8-flags=--single-threaded,--max-semi-space-size=1",
  ]);
  for (const libDir of [{ relative: "dist" }, { absolute: "/usr/local/lib/x" }]) {
    assertEquals(denoFlagsFromLauncher(renderLauncher(libDir, perms)), perms);
  }
  assertThrows(() => denoFlagsFromLauncher("#!/bin/sh\nexec deno run x.js\n"), Error, "rebuild");
  assertThrows(() => parseDenoFlagsFile("--allow-all; rm -rf /"), Error, "permission flag");
  assertThrows(() => parseDenoFlagsFile("--v8-flags=--x;id"), Error, "--v8-flags=--option");
  assertThrows(() => parseDenoFlagsFile("--v8-flags=--x --allow-y"), Error, "--v8-flags=--option");
  assertThrows(() => parseDenoFlagsFile("--reload"), Error, "permission flag");
});

/** Runs a generated launcher against a fake deno that prints its argv and environment. */
async function runLauncher(text: string, layout: (dir: string) => Promise<string>) {
  const dir = await Deno.makeTempDir({ prefix: "stb-launcher-" });
  try {
    const libDir = await layout(dir);
    await Deno.writeTextFile(
      `${libDir}/deno`,
      '#!/bin/sh\nprintf "%s\\n" "$@" "L=$STB_NETACCT_LAUNCHER" "D=$STB_NETACCT_LIBDIR"\n',
      { mode: 0o755 },
    );
    await Deno.writeTextFile(`${dir}/stb-netacct`, text, { mode: 0o755 });
    const o = await new Deno.Command(`${dir}/stb-netacct`, {
      args: ["graph", "a b"],
      stdout: "piped",
    }).output();
    return { dir, libDir, lines: new TextDecoder().decode(o.stdout).trim().split("\n") };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("renderLauncher: build-tree and installed launchers run the bundle with the perms", async () => {
  const perms = ["--allow-read", "--allow-run=nft"];
  const rel = await runLauncher(renderLauncher({ relative: "dist" }, perms), async (d) => {
    await Deno.mkdir(`${d}/dist`);
    return `${d}/dist`;
  });
  assertEquals(rel.lines, [
    "run",
    "--quiet",
    "--no-prompt",
    "--no-config",
    "--no-lock",
    "--cached-only",
    ...perms,
    `${rel.libDir}/stb-netacct.js`,
    "graph",
    "a b",
    `L=${rel.dir}/stb-netacct`,
    `D=${rel.libDir}`,
  ]);
  let abs = "";
  const inst = await runLauncher(
    renderLauncher({ absolute: "/nonexistent" }, perms).replace(
      "lib=/nonexistent",
      'lib="$(dirname "$0")/lib"',
    ),
    async (d) => {
      abs = `${d}/lib`;
      await Deno.mkdir(abs);
      return abs;
    },
  );
  assertEquals(inst.lines.slice(-4), ["graph", "a b", `L=${inst.dir}/stb-netacct`, `D=${abs}`]);
});
