/**
 * Known-size TCP transfers for the benchmarks (accuracy, latency), run inside their netns.
 *
 *   deno run -A traffic.ts serve ADDR PORT [ADDR PORT ...]
 *     Prints "ready" once listening. A client sends "up N\n" then N bytes (answered "ok\n"),
 *     or "down N\n" (answered with N bytes, then the server closes).
 *   deno run -A traffic.ts client CGROUP_DIR|- up|down,ADDR,PORT,BYTES ...
 *     Joins CGROUP_DIR first (writes its pid to cgroup.procs, so every socket it opens is
 *     the cgroup's), runs the transfers in order, prints "done".
 */

const CHUNK = new Uint8Array(64 * 1024).fill(0x5a);

async function readExactly(conn: Deno.Conn, n: number): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  let left = n;
  while (left > 0) {
    const got = await conn.read(buf.subarray(0, Math.min(buf.length, left)));
    if (got === null) throw new Error(`peer closed with ${left} bytes still expected`);
    left -= got;
  }
}

async function writeN(conn: Deno.Conn, n: number): Promise<void> {
  let left = n;
  while (left > 0) {
    const part = left >= CHUNK.length ? CHUNK : CHUNK.subarray(0, left);
    let off = 0;
    while (off < part.length) off += await conn.write(part.subarray(off));
    left -= part.length;
  }
}

async function readLine(conn: Deno.Conn): Promise<string> {
  const one = new Uint8Array(1);
  let line = "";
  while (true) {
    const got = await conn.read(one);
    if (got === null) throw new Error("peer closed before a full line");
    const byte = one[0]!; // read one byte into it
    if (byte === 0x0a) return line;
    line += String.fromCharCode(byte);
  }
}

async function handle(conn: Deno.Conn): Promise<void> {
  try {
    const [op, nText] = (await readLine(conn)).split(" ");
    const n = Number(nText);
    if (op === "up") {
      await readExactly(conn, n);
      await conn.write(new TextEncoder().encode("ok\n"));
    } else if (op === "down") {
      await writeN(conn, n);
    }
  } catch (e) {
    console.error(`serve: ${e}`);
  } finally {
    try {
      conn.close();
    } catch { /* already closed */ }
  }
}

async function serve(args: string[]): Promise<void> {
  const listeners: Deno.Listener[] = [];
  for (let i = 0; i < args.length; i += 2) {
    listeners.push(Deno.listen({ hostname: args[i], port: Number(args[i + 1]) }));
  }
  console.log("ready");
  await Promise.all(listeners.map(async (l) => {
    for await (const conn of l) handle(conn);
  }));
}

async function client(args: string[]): Promise<void> {
  const [cgroupDir, ...ops] = args;
  if (cgroupDir !== "-") await Deno.writeTextFile(`${cgroupDir}/cgroup.procs`, `${Deno.pid}\n`);
  for (const spec of ops) {
    const [op, hostname, port, bytes] = spec.split(",");
    const n = Number(bytes);
    const conn = await Deno.connect({ hostname, port: Number(port) });
    await conn.write(new TextEncoder().encode(`${op} ${n}\n`));
    if (op === "up") {
      await writeN(conn, n);
      if (await readLine(conn) !== "ok") throw new Error("server did not confirm the upload");
    } else {
      await readExactly(conn, n);
    }
    conn.close();
  }
  console.log("done");
}

if (import.meta.main) {
  const [mode, ...rest] = Deno.args;
  if (mode === "serve") await serve(rest);
  else if (mode === "client") await client(rest);
  else {
    console.error(
      "usage: traffic.ts serve ADDR PORT ... | client CGROUP_DIR|- up|down,ADDR,PORT,BYTES ...",
    );
    Deno.exit(2);
  }
}
