/**
 * `completions` and `manpage`: the command line describing itself. Both read the program
 * they are part of (the root command, their parent), so what they print always matches
 * what main.ts wires.
 */

import { Argument, Command } from "@commander-js/extra-typings";
import { VERSION } from "../lib/version.ts";
import { COMPLETION_PATHS, renderCompletions, type Shell, SHELLS } from "./completions.ts";
import { MANPAGE_PATH, renderManpage } from "./manpage.ts";
import { describeProgram } from "./model.ts";

export { COMPLETION_PATHS, MANPAGE_PATH };

// deno-lint-ignore no-explicit-any
type AnyCommand = Command<any, any, any>;

/** All of `text` to stdout (a pipe takes a large write in parts). */
function print(text: string): void {
  const bytes = new TextEncoder().encode(text);
  for (let off = 0; off < bytes.length;) off += Deno.stdout.writeSync(bytes.subarray(off));
}

function root(cmd: AnyCommand): AnyCommand {
  let c = cmd;
  while (c.parent) c = c.parent as AnyCommand;
  return c;
}

/** Everything `install` puts beside the program: man page and completions, by path. */
export function documentationFiles(program: AnyCommand): { path: string; text: string }[] {
  const model = describeProgram(root(program));
  return [
    { path: MANPAGE_PATH, text: renderManpage(model, VERSION) },
    ...SHELLS.map((s) => ({
      path: COMPLETION_PATHS[s],
      text: renderCompletions(model, s, VERSION),
    })),
  ];
}

export function completionsCommand() {
  return new Command("completions")
    .summary("print the shell completion script for bash, zsh or fish")
    .description(
      "Print the completion script for SHELL on stdout: every subcommand, option and choice\n" +
        "of this stb-netacct. `sudo stb-netacct install` installs all three where the\n" +
        "shells look; without installing, load one into the running shell as below.",
    )
    .addArgument(new Argument("<shell>", "bash, zsh or fish").choices(SHELLS))
    .addHelpText(
      "after",
      "\nExamples:\n" +
        "  source <(stb-netacct completions bash)                    # bash, this shell\n" +
        "  stb-netacct completions zsh > ~/.zfunc/_stb-netacct        # zsh, with ~/.zfunc in fpath\n" +
        "  stb-netacct completions fish > ~/.config/fish/completions/stb-netacct.fish\n",
    )
    .action((shell, _opts, cmd) => {
      print(renderCompletions(describeProgram(root(cmd as AnyCommand)), shell as Shell, VERSION));
    });
}

export function manpageCommand() {
  return new Command("manpage")
    .summary("print the manual page (roff)")
    .description(
      "Print stb-netacct(1) in roff on stdout, made from the same definitions as --help.\n" +
        "`install` installs it; read it without installing as below.",
    )
    .addHelpText("after", "\nExample:\n  stb-netacct manpage | man -l -\n")
    .action((_opts, cmd) => {
      print(renderManpage(describeProgram(root(cmd as AnyCommand)), VERSION));
    });
}
