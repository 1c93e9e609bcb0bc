/**
 * The command line as data, read from the commander program itself: the completions and
 * the man page are rendered from this, so every subcommand and option main.ts wires is in
 * them, with the same words as --help, and neither can drift from the program.
 */

import type { Argument, Command, Help, Option } from "@commander-js/extra-typings";

// extra-typings' Command carries its argument and option types; the model reads any.
// deno-lint-ignore no-explicit-any
type AnyCommand = Command<any, any, any>;

export interface CliOption {
  short: string | null;
  long: string | null;
  /** The value's name ("path" for `--config <path>`); null for a flag. */
  value: string | null;
  choices: string[] | null;
  /** As written in the program. */
  description: string;
  /** As --help shows it: with the default and the choices. */
  helpDescription: string;
  /** --help's left column: "-c, --config <path>". */
  term: string;
}

export interface CliArgument {
  name: string;
  required: boolean;
  choices: string[] | null;
  description: string;
}

export interface CliCommand {
  name: string;
  /** "[options] <shell>". */
  usage: string;
  summary: string;
  description: string;
  options: CliOption[];
  arguments: CliArgument[];
  /** What --help prints after the options: examples, exit statuses, notes. */
  helpAfter: string;
}

export interface CliModel {
  name: string;
  description: string;
  options: CliOption[];
  /** Visible subcommands, in --help's order, without commander's own `help`. */
  commands: CliCommand[];
  helpAfter: string;
}

function option(help: Help, o: Option): CliOption {
  const value = /[<[]([^>\]]+)[>\]]/.exec(o.flags)?.[1] ?? null;
  return {
    short: o.short ?? null,
    long: o.long ?? null,
    value,
    choices: o.argChoices ?? null,
    description: o.description,
    helpDescription: help.optionDescription(o),
    term: help.optionTerm(o),
  };
}

function argument(a: Argument): CliArgument {
  return {
    name: a.name(),
    required: a.required,
    choices: a.argChoices ?? null,
    description: a.description,
  };
}

/** What --help prints after the usual sections (addHelpText "after"), captured. */
function helpAfter(cmd: AnyCommand): string {
  const saved = cmd.configureOutput();
  let out = "";
  cmd.configureOutput({ ...saved, writeOut: (s) => (out += s), getOutHasColors: () => false });
  try {
    cmd.outputHelp();
  } finally {
    cmd.configureOutput(saved);
  }
  const main = cmd.helpInformation();
  const at = out.indexOf(main);
  return (at >= 0 ? out.slice(at + main.length) : "").replace(/^\n+/, "").trimEnd();
}

function command(cmd: AnyCommand): CliCommand {
  const help = cmd.createHelp();
  return {
    name: cmd.name(),
    usage: cmd.usage(),
    summary: cmd.summary() || cmd.description().split("\n")[0] || "",
    description: cmd.description(),
    options: help.visibleOptions(cmd).map((o) => option(help, o)),
    arguments: help.visibleArguments(cmd).map(argument),
    helpAfter: helpAfter(cmd),
  };
}

export function describeProgram(program: AnyCommand): CliModel {
  const help = program.createHelp();
  return {
    name: program.name(),
    description: program.description(),
    options: help.visibleOptions(program).map((o) => option(help, o)),
    commands: help.visibleCommands(program)
      .filter((c) => c.name() !== "help")
      .map((c) => command(c as AnyCommand)),
    helpAfter: helpAfter(program),
  };
}
