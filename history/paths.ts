/**
 * Where history lives. Beside the state directory, not in it: the state directory is
 * root's alone (0700, or systemd's private one for the service), and history is for the
 * config's owner to read too. Free of the writer's imports, so readers (graph) take it
 * without FFI.
 */

import { DEFAULT_COUNTERS_PATH } from "../lib/contract.ts";

export const DEFAULT_HISTORY_DIR = "/var/lib/stb-netacct-history";
export const DEFAULT_HISTORY_PATH = `${DEFAULT_HISTORY_DIR}/history.sqlite`;

/** Like the state: the default output's history is the default one, another's is beside it. */
export function defaultHistoryPath(output: string): string {
  return output === DEFAULT_COUNTERS_PATH ? DEFAULT_HISTORY_PATH : `${output}.history.sqlite`;
}
