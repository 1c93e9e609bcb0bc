/**
 * A real pseudo-terminal for the CLI: tmux (a private server on its own socket, one pane of
 * the size asked, no status line) runs the command, `capture-pane` gives the screen as a
 * person sees it (with -e, with tmux's own rendering of the colours), `send-keys` types.
 * After the command exits its status is printed in the pane ("[exited N]"). Everything is
 * removed in close(), also when a test fails.
 */

import { sleep } from "./exec.ts";

export interface TtyOptions {
  columns: number;
  rows: number;
  argv: string[];
  /** Environment of the command (PATH, HOME, LANG and TERM are set already). */
  env?: Record<string, string>;
  cwd?: string;
}

export class Tty {
  #dir: string;
  #closed = false;

  private constructor(dir: string) {
    this.#dir = dir;
  }

  static async start(o: TtyOptions): Promise<Tty> {
    const dir = await Deno.makeTempDir({ prefix: "stb-tty-" });
    const tty = new Tty(dir);
    try {
      await Deno.writeTextFile(
        `${dir}/tmux.conf`,
        "set -g status off\nset -g default-terminal xterm-256color\n",
      );
      const env = Object.entries({ LANG: "C.UTF-8", ...o.env }).flatMap(([k, v]) => [
        "-e",
        `${k}=${v}`,
      ]);
      await tty.#tmux([
        "-f",
        `${dir}/tmux.conf`,
        "new-session",
        "-d",
        "-x",
        String(o.columns),
        "-y",
        String(o.rows),
        ...(o.cwd ? ["-c", o.cwd] : []),
        ...env,
        "--",
        // tmux 3.3 loses a pane's exit status when the pty closes before the process is
        // reaped: a shell prints it instead, as the last line of the pane.
        "sh",
        "-c",
        '"$@"; echo "[exited $?]"; exec sleep 3600',
        "sh",
        ...o.argv,
      ]);
      return tty;
    } catch (e) {
      await tty.close();
      throw e;
    }
  }

  async #tmux(args: string[]): Promise<string> {
    const out = await new Deno.Command("tmux", {
      args: ["-u", "-S", `${this.#dir}/socket`, ...args],
      // Only what the pane needs: the test's own NO_COLOR or TERM must not leak in.
      clearEnv: true,
      env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", HOME: this.#dir, LANG: "C.UTF-8" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    if (!out.success) {
      throw new Error(`tmux ${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
    }
    return text;
  }

  /**
   * The screen, one string per row, trailing blanks cut; with `color`, tmux's SGR codes;
   * with `join`, a line the terminal wrapped is one string again (so overflow shows).
   */
  async screen(o: { color?: boolean; join?: boolean } = {}): Promise<string[]> {
    const flags = [...(o.color ? ["-e"] : []), ...(o.join ? ["-J"] : [])];
    const text = await this.#tmux(["capture-pane", "-p", ...flags]);
    return text.replace(/\n$/, "").split("\n");
  }

  /** Polls the screen until `ok` holds; throws with the last screen after `timeoutMs`. */
  async waitFor(
    what: string,
    ok: (screen: string[]) => boolean,
    timeoutMs = 10_000,
  ): Promise<string[]> {
    const t0 = Date.now();
    let last: string[] = [];
    while (Date.now() - t0 < timeoutMs) {
      last = await this.screen();
      if (ok(last)) return last;
      await sleep(25);
    }
    throw new Error(`timed out waiting for ${what}; the screen:\n${last.join("\n")}`);
  }

  /** Types keys by tmux's names ("q", "Escape", "C-c", "Up"). */
  async keys(...keys: string[]): Promise<void> {
    await this.#tmux(["send-keys", ...keys]);
  }

  /** The command's exit status once it has exited, else null. */
  async exitStatus(): Promise<number | null> {
    for (const line of await this.screen()) {
      const m = /^\[exited (\d+)\]$/.exec(line);
      if (m) return Number(m[1]);
    }
    return null;
  }

  async waitExit(timeoutMs = 5000): Promise<number> {
    const t0 = Date.now();
    while (Date.now() - t0 < timeoutMs) {
      const s = await this.exitStatus();
      if (s !== null) return s;
      await sleep(25);
    }
    throw new Error(`the command did not exit; the screen:\n${(await this.screen()).join("\n")}`);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      await this.#tmux(["kill-server"]);
    } catch { /* never started, or already gone */ }
    await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
  }
}
