/**
 * Traffic history: `run` records it (recorder.ts) into an SQLite database, `report` and
 * `graph` read it (reader.ts). This module names where it lives and starts the recorder.
 */

import type { HistoryConfig } from "../lib/config.ts";
import { hostZone } from "./calendar.ts";
import { clearRequestPath } from "./db.ts";
import { HistoryRecorder } from "./recorder.ts";

export { HistoryRecorder } from "./recorder.ts";
export { HistoryReader } from "./reader.ts";
export { DEFAULT_HISTORY_DIR, DEFAULT_HISTORY_PATH, defaultHistoryPath } from "./paths.ts";

export interface StartHistory {
  path: string;
  config: HistoryConfig;
  /** The config owner's group, which may read history; null: root only. */
  ownerGid: number | null;
  /** The run's state file: `reset --history` leaves its request beside it. */
  statePath: string;
  log: (message: string) => void;
}

/** The recorder `run` hands its samples to; null when the config turns history off. */
export function startHistory(o: StartHistory): HistoryRecorder | null {
  if (!o.config.enabled) {
    o.log('history: off ("history.enabled" is false)');
    return null;
  }
  return new HistoryRecorder({
    path: o.path,
    retention: o.config.retention,
    ownerGid: o.ownerGid,
    zone: () => hostZone().name,
    clearRequest: clearRequestPath(o.statePath),
    log: o.log,
  });
}
