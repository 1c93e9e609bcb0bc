/**
 * stb-netacct: count and graph the external network traffic of one app's cgroups.
 * This file only wires the subcommands and turns failures into exit codes; the program
 * is built by a function so its definition can be read without running it (cli/).
 */

import { Command, CommanderError, Help } from "@commander-js/extra-typings";
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
import { completionsCommand, manpageCommand } from "./cli/mod.ts";

/**
 * Help wraps to the terminal: a line break inside a paragraph of a description is a space
 * (the wrap decides where lines end), an indented line keeps its place.
 */
const helpConfig = {
  boxWrap(this: Help, text: string, width: number): string {
    return Help.prototype.boxWrap.call(this, text.replace(/([^\n])\n(?=\S)/g, "$1 "), width);
  },
};
/** The terminal's width when help goes to one; 80 into a pipe or a file. */
const outputConfig = {
  getOutHelpWidth: () => {
    try {
      return Deno.stdout.isTerminal() ? Deno.consoleSize().columns : 80;
    } catch {
      return 80;
    }
  },
};

/** The whole command line: the subcommands, their help, their usage-error handling. */
export function buildProgram() {
  const program = new Command("stb-netacct")
    .description(
      "Measure the external network traffic (download/upload) of the StB app, by cgroup v2. " +
        "`run` (root) counts in the kernel and writes counters.json every 0.5 s; `graph` " +
        "draws it in the terminal for any user. Loopback, private, link-local, CGNAT, " +
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
    .addCommand(completionsCommand())
    .addCommand(manpageCommand())
    .addCommand(verifyProbeCommand(), { hidden: true })
    .addHelpText(
      "after",
      "\nExamples:\n" +
        "  sudo stb-netacct run --backend ebpf     # count; publish counters.json\n" +
        "  stb-netacct graph                       # live chart, no root needed\n" +
        "  stb-netacct report                      # how much per day, the last 30 days\n" +
        "  stb-netacct help run                    # every option of a subcommand\n",
    );
  program.configureHelp(helpConfig).configureOutput(outputConfig);
  for (const sub of program.commands) {
    sub.exitOverride().configureHelp(helpConfig).configureOutput(outputConfig).showHelpAfterError(
      `Usage: stb-netacct ${sub.name()} ${sub.usage()}\n(run 'stb-netacct ${sub.name()} --help' for every option)`,
    );
  }
  return program;
}

if (import.meta.main) {
  try {
    await buildProgram().parseAsync(Deno.args, { from: "user" });
  } catch (e) {
    if (e instanceof CommanderError) {
      // Commander already printed the message (or the help/version text).
      Deno.exit(e.exitCode === 0 ? 0 : EXIT_USAGE);
    }
    console.error(`stb-netacct: ${describeError(e)}`);
    Deno.exit(e instanceof UsageError || e instanceof ConfigError ? EXIT_USAGE : EXIT_FAILURE);
  }
}
