/**
 * The config as root loads it: opened once, judged by that descriptor (who owns it, who
 * may write it and the directory it really lives in) and read from the same descriptor.
 * Judging one path and then opening it again would let whoever can flip a symlink on the
 * way have root load a file that was never judged.
 */

import {
  checkTrust,
  type Config,
  ConfigError,
  configFromText,
  MAX_CONFIG_BYTES,
  validateConfig,
} from "./config.ts";
import { readOpenFile } from "./held_dir.ts";
import { AT_FDCWD, cString, errno, libc, O_CLOEXEC, O_RDONLY, osError, statAt } from "./libc.ts";

const O_NONBLOCK = 0o4000; // a FIFO planted as the config must not block the open

/**
 * Loads `path` as root's orders (see the header); `uid` is the user running us, whose own
 * file is trusted too. A missing file at a default path (`explicit` false) means the
 * built-in defaults; a missing file the user named is an error.
 */
export function loadTrustedConfig(
  path: string,
  explicit: boolean,
  uid: number | null = Deno.uid(),
): Config {
  const shown = JSON.stringify(path);
  const fd = libc().openat(AT_FDCWD, cString(path), O_RDONLY | O_NONBLOCK | O_CLOEXEC, 0);
  if (fd < 0) {
    const e = osError(errno(), `open '${path}'`);
    if (e instanceof Deno.errors.NotFound && !explicit) {
      return validateConfig({}, "built-in defaults");
    }
    if (e instanceof Deno.errors.NotFound) {
      throw new ConfigError(
        `Config ${shown} does not exist: create it (see README "Config file") or drop --config`,
        { cause: e },
      );
    }
    throw new ConfigError(`Cannot read config ${shown}: ${e.message}`, { cause: e });
  }
  try {
    // Where the opened file really is: its directory is judged, not the one `path` names.
    const real = Deno.readLinkSync(`/proc/self/fd/${fd}`);
    const st = statAt(fd, "", real)!;
    if (st.type !== "file") throw new ConfigError(`Config ${shown} is not a regular file`);
    checkTrust(real, { ...st, isDirectory: false }, uid);
    const dir = real.slice(0, real.lastIndexOf("/")) || "/";
    checkTrust(dir, Deno.statSync(dir), uid);
    if (st.size > MAX_CONFIG_BYTES) {
      throw new ConfigError(
        `Config ${shown} is ${st.size} bytes: a config is never over ${MAX_CONFIG_BYTES} ` +
          `bytes, check the path`,
      );
    }
    let text: string;
    try {
      text = readOpenFile(fd, path, MAX_CONFIG_BYTES);
    } catch (e) {
      throw new ConfigError(`Cannot read config ${shown}: ${(e as Error).message}`, { cause: e });
    }
    return configFromText(text, path);
  } finally {
    libc().close(fd);
  }
}
