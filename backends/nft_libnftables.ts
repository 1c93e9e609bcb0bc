/**
 * How the nft and iptables backends talk to nftables: libnftables.so.1 through FFI (Debian
 * 12: package libnftables1, a dependency of nftables), else the `nft` binary. Both take
 * the same command text and give back the same output, so the backends have one code
 * path; the library only saves the process spawn (~0.1 ms instead of 4-8 ms per read).
 *
 * libnftables keeps one netlink socket per context, opened in the network namespace the
 * process is in when the context is created, and is not thread-safe: one context, used
 * from the JS thread only, with synchronous calls (each takes well under a millisecond).
 */

import { BackendError } from "./backend.ts";
import { runTool, ToolError } from "./exec.ts";

const LIBNFTABLES_SYMBOLS = {
  /** struct nft_ctx *nft_ctx_new(uint32_t flags) */
  nft_ctx_new: {
    parameters: ["u32"], // uint32_t flags (NFT_CTX_DEFAULT = 0)
    result: "pointer", // struct nft_ctx * (NULL when out of memory or no netlink socket)
  },
  /** void nft_ctx_free(struct nft_ctx *ctx) */
  nft_ctx_free: {
    parameters: ["pointer"], // struct nft_ctx *ctx
    result: "void",
  },
  /** void nft_ctx_output_set_flags(struct nft_ctx *ctx, unsigned int flags) */
  nft_ctx_output_set_flags: {
    parameters: [
      "pointer", // struct nft_ctx *ctx
      "u32", // unsigned int flags (NFT_CTX_OUTPUT_*)
    ],
    result: "void",
  },
  /** void nft_ctx_set_dry_run(struct nft_ctx *ctx, bool dry): `nft --check` */
  nft_ctx_set_dry_run: {
    parameters: [
      "pointer", // struct nft_ctx *ctx
      "bool", // bool dry
    ],
    result: "void",
  },
  /** int nft_ctx_buffer_output(struct nft_ctx *ctx): 0 on success */
  nft_ctx_buffer_output: {
    parameters: ["pointer"], // struct nft_ctx *ctx
    result: "i32",
  },
  /** int nft_ctx_buffer_error(struct nft_ctx *ctx): 0 on success */
  nft_ctx_buffer_error: {
    parameters: ["pointer"], // struct nft_ctx *ctx
    result: "i32",
  },
  /** const char *nft_ctx_get_output_buffer(struct nft_ctx *ctx): valid until the next call;
   *  reading it empties the buffer */
  nft_ctx_get_output_buffer: {
    parameters: ["pointer"], // struct nft_ctx *ctx
    result: "pointer", // const char * (NUL-terminated)
  },
  /** const char *nft_ctx_get_error_buffer(struct nft_ctx *ctx): as above, for messages */
  nft_ctx_get_error_buffer: {
    parameters: ["pointer"], // struct nft_ctx *ctx
    result: "pointer", // const char * (NUL-terminated)
  },
  /** int nft_run_cmd_from_buffer(struct nft_ctx *nft, const char *buf): 0 on success */
  nft_run_cmd_from_buffer: {
    parameters: [
      "pointer", // struct nft_ctx *nft
      "buffer", // const char *buf (NUL-terminated nft script)
    ],
    result: "i32",
  },
} as const;

/** NFT_CTX_OUTPUT_JSON from libnftables.h. */
const NFT_CTX_OUTPUT_JSON = 1 << 4;
const NFT_CTX_DEFAULT = 0;

export interface NftRunOptions {
  /** Output as JSON (`nft -j`). */
  json?: boolean;
  /** Check the commands against the kernel without committing them (`nft --check`). */
  dryRun?: boolean;
}

/** Runs nft scripts; what both ways of reaching nftables offer. */
export interface NftRunner {
  /** "libnftables" or "nft binary", for log lines and benchmarks. */
  readonly via: string;
  /** Runs `script`, returns what nft printed; throws a ToolError quoting nft's messages. */
  run(script: string, options?: NftRunOptions): Promise<string>;
  close(): void;
}

/**
 * The `nft` binary: `nft [-j] [--check] -f -` with the script on stdin, or a one-line
 * command as an argument: nft 1.0.6 prints nothing for a `list` read with `-j -f`.
 */
export class NftBinaryRunner implements NftRunner {
  readonly via = "nft binary";
  run(script: string, options: NftRunOptions = {}): Promise<string> {
    const args = [...(options.json ? ["-j"] : []), ...(options.dryRun ? ["--check"] : [])];
    const oneLine = script.trim();
    if (!oneLine.includes("\n")) return runTool("nft", [...args, oneLine]);
    return runTool("nft", [...args, "-f", "-"], { stdin: script });
  }
  close(): void {}
}

type Lib = Deno.DynamicLibrary<typeof LIBNFTABLES_SYMBOLS>["symbols"];
let library: Lib | null = null;

function cString(s: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

function readCString(p: Deno.PointerValue): string {
  return p === null ? "" : Deno.UnsafePointerView.getCString(p);
}

/** libnftables.so.1 through FFI; one context for the life of the backend. */
export class LibnftablesRunner implements NftRunner {
  readonly via = "libnftables";
  #ctx: Deno.PointerObject | null;
  #lib: Lib;
  #flags = -1;
  #dry: boolean | null = null;

  /** Throws a BackendError when the library cannot be loaded or gives no context. */
  constructor() {
    if (!library) {
      try {
        library = Deno.dlopen("libnftables.so.1", LIBNFTABLES_SYMBOLS).symbols;
      } catch (cause) {
        const denied = cause instanceof Deno.errors.NotCapable ||
          cause instanceof Deno.errors.PermissionDenied;
        throw new BackendError(
          denied
            ? `Loading "libnftables.so.1" needs FFI permission: run with --allow-ffi (the built binary has it)`
            : `Cannot load "libnftables.so.1": install it with \`apt-get install libnftables1\``,
          { cause },
        );
      }
    }
    this.#lib = library;
    const ctx = this.#lib.nft_ctx_new(NFT_CTX_DEFAULT);
    if (ctx === null) {
      throw new BackendError(
        "libnftables could not create a context (no netlink socket?): run as root",
      );
    }
    this.#ctx = ctx;
    this.#check("nft_ctx_buffer_output", this.#lib.nft_ctx_buffer_output(ctx));
    this.#check("nft_ctx_buffer_error", this.#lib.nft_ctx_buffer_error(ctx));
  }

  /** The one place a libnftables return code becomes an error. */
  #check(what: string, rc: number, script?: string): void {
    if (rc === 0) return;
    const said = this.#ctx ? readCString(this.#lib.nft_ctx_get_error_buffer(this.#ctx)) : "";
    if (script === undefined) {
      throw new BackendError(`libnftables ${what} failed with ${rc}: ${said || "no message"}`);
    }
    // Shaped like a failed `nft -f -`, so callers recognise nft's own words either way.
    const first = said.split("\n").find((l) => l.trim() !== "") ?? "no message";
    throw new ToolError(
      `nft (libnftables) refused "${script.split("\n")[0]}${
        script.includes("\n") ? " ..." : ""
      }": ${first}` + (/Operation not permitted/.test(said) ? "; run stb-netacct as root" : ""),
      { tool: "nft", stderr: said, code: rc },
    );
  }

  run(script: string, options: NftRunOptions = {}): Promise<string> {
    const ctx = this.#ctx;
    if (!ctx) return Promise.reject(new BackendError("libnftables context used after close"));
    const flags = options.json ? NFT_CTX_OUTPUT_JSON : 0;
    if (flags !== this.#flags) {
      this.#lib.nft_ctx_output_set_flags(ctx, flags);
      this.#flags = flags;
    }
    const dry = options.dryRun ?? false;
    if (dry !== this.#dry) {
      this.#lib.nft_ctx_set_dry_run(ctx, dry);
      this.#dry = dry;
    }
    try {
      const rc = this.#lib.nft_run_cmd_from_buffer(ctx, cString(script));
      // Read (and so empty) the output buffer also on failure, or it leaks into the next run.
      const out = readCString(this.#lib.nft_ctx_get_output_buffer(ctx));
      this.#check("nft_run_cmd_from_buffer", rc, script);
      // Drop warnings of a successful run (e.g. "managed by iptables-nft").
      this.#lib.nft_ctx_get_error_buffer(ctx);
      return Promise.resolve(out);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  close(): void {
    if (this.#ctx) this.#lib.nft_ctx_free(this.#ctx);
    this.#ctx = null;
  }
}

/**
 * libnftables when it loads, else the `nft` binary; `log` hears once why the binary is
 * used. `prefer: "binary"` forces the binary (benchmarks compare the two).
 */
export function openNftRunner(
  log: (message: string) => void,
  prefer: "library" | "binary" = "library",
): NftRunner {
  if (prefer === "binary") return new NftBinaryRunner();
  try {
    return new LibnftablesRunner();
  } catch (e) {
    log(
      `nft: ${e instanceof Error ? e.message : e}; using the nft binary instead ` +
        `(works the same, a read costs a process spawn)`,
    );
    return new NftBinaryRunner();
  }
}
