/**
 * stb-netacct: count and graph the external network traffic of one app's cgroups.
 * This file only wires the subcommands and turns failures into exit codes.
 */

import { Command, CommanderError } from "@commander-js/extra-typings";
import { runCommand } from "./run/mod.ts";
import { graphCommand } from "./graph/mod.ts";
import { resetCommand } from "./run/reset.ts";
import { doctorCommand } from "./doctor/mod.ts";
import { eventsCommand } from "./events/mod.ts";
import { installCommand, statusCommand, uninstallCommand } from "./install/mod.ts";
import { describeError, EXIT_FAILURE, EXIT_USAGE, UsageError } from "./lib/errors.ts";
import { ConfigError } from "./lib/config.ts";
import { VERSION } from "./lib/version.ts";
import { verifyCommand, verifyProbeCommand } from "./verify/mod.ts";
import { reportCommand } from "./history/report.ts";

const program = new Command("stb-netacct")
  .description(
    "Measure the external network traffic (download/upload) of the StB app, by cgroup v2.\n" +
      "`run` (root) counts in the kernel and writes counters.json every 0.5 s; `graph`\n" +
      "draws it in the terminal for any user. Loopback, private, link-local, CGNAT,\n" +
      "multicast and IPv6 ULA/link-local traffic never counts.",
  )
  .version(VERSION, "-V, --version")
  .showHelpAfterError(
    "Usage: stb-netacct [options] <command>\n(run 'stb-netacct --help' for the commands and examples)",
  )
  .exitOverride()
  .addCommand(runCommand())
  .addCommand(graphCommand())
  .addCommand(reportCommand())
  .addCommand(eventsCommand())
  .addCommand(doctorCommand())
  .addCommand(installCommand())
  .addCommand(uninstallCommand())
  .addCommand(statusCommand())
  .addCommand(resetCommand())
  .addCommand(verifyCommand())
  .addCommand(verifyProbeCommand(), { hidden: true })
  .addHelpText(
    "after",
    "\nExamples:\n" +
      "  sudo stb-netacct run --backend ebpf     # count, publish /run/stb-netacct/counters.json\n" +
      "  stb-netacct graph                       # live chart, no root needed\n" +
      "  stb-netacct report                      # how much per day, the last 30 days\n" +
      "  stb-netacct help run                    # every option of a subcommand\n",
  );

for (const sub of program.commands) {
  sub.exitOverride().showHelpAfterError(
    `Usage: stb-netacct ${sub.name()} ${sub.usage()}\n(run 'stb-netacct ${sub.name()} --help' for every option)`,
  );
}

try {
  await program.parseAsync(Deno.args, { from: "user" });
} catch (e) {
  if (e instanceof CommanderError) {
    // Commander already printed the message (or the help/version text).
    Deno.exit(e.exitCode === 0 ? 0 : EXIT_USAGE);
  }
  console.error(`stb-netacct: ${describeError(e)}`);
  Deno.exit(e instanceof UsageError || e instanceof ConfigError ? EXIT_USAGE : EXIT_FAILURE);
}
