/**
 * The collector on the real kernel: a process in a target cgroup makes more connects than
 * the ring buffer holds between two polls, and every connect is either an event or a drop.
 * Root only (it makes a cgroup and links cgroup programs at it).
 *
 *   deno test -A events/collector_test.ts
 */

import { EventCollector, MAX_RECORDS_PER_POLL } from "./collector.ts";
import { cgroupDir, cgroupId, findCgroup2Mount, removeCgroupDir } from "../lib/cgroup.ts";
import { assert, assertEquals } from "../lib/test_assert.ts";

const isRoot = Deno.uid() === 0;

/** UDP connect() runs the connect4 programs without sending anything; one socket suffices. */
const CONNECTS = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[1])):
    s.connect(("127.0.0.1", 9))
`;

async function connectsIn(dir: string, count: number): Promise<void> {
  const child = new Deno.Command("sh", {
    args: [
      "-c",
      'echo $$ > "$1/cgroup.procs" && exec python3 -c "$2" "$3"',
      "sh",
      dir,
      CONNECTS,
      String(count),
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  const out = await child;
  if (!out.success) throw new Error(`connects failed: ${new TextDecoder().decode(out.stderr)}`);
}

/** Polls until the ring is empty; the events of every poll, and each poll's count. */
function pollAll(collector: EventCollector): { events: number; polls: number[] } {
  const polls: number[] = [];
  for (let n = collector.poll().length; n > 0; n = collector.poll().length) polls.push(n);
  return { events: polls.reduce((a, b) => a + b, 0), polls };
}

Deno.test({
  name:
    "events: a full ring buffer's losses are counted, it is read in bounded polls, and every connect is an event or a drop",
  ignore: !isRoot,
  sanitizeResources: false,
  async fn() {
    const mount = findCgroup2Mount();
    const path = `/stb-netacct-test-drops-${crypto.randomUUID().slice(0, 8)}`;
    const dir = cgroupDir(mount, path);
    Deno.mkdirSync(dir);
    const collector = new EventCollector();
    try {
      collector.start([{ name: "svc", path, id: cgroupId(mount, path) }], {
        mount,
        exclude: [],
        monotonicNow: () => performance.now() / 1000,
      });
      // 256 KiB of ring holds a few thousand records: 12,000 connects overflow it.
      const burst = 12_000;
      let events = pollAll(collector).events;
      assertEquals(collector.dropped(), 0, "nothing dropped before the burst");
      await connectsIn(dir, burst);
      const first = pollAll(collector);
      events += first.events;
      // A full ring is read over several polls, each bounded: a flood cannot hold one.
      assert(first.polls.length >= 2, `polls ${first.polls}`);
      assert(first.polls.every((n) => n <= MAX_RECORDS_PER_POLL), `polls ${first.polls}`);
      assertEquals(first.polls[0], MAX_RECORDS_PER_POLL, `polls ${first.polls}`);
      const dropped = collector.dropped();
      assert(dropped > 0, `the ring overflowed: ${events} events, ${dropped} dropped`);
      assertEquals(events + dropped, burst, "every connect is an event or a drop");
      // Empty polls leave the count alone (after two, it is no longer read from the kernel)...
      for (let i = 0; i < 3; i++) {
        assertEquals(collector.poll().length, 0);
        assertEquals(collector.dropped(), dropped, `empty poll ${i + 1}`);
      }
      // ...and a new overflow after them is counted again.
      await connectsIn(dir, burst);
      events += pollAll(collector).events;
      const droppedAgain = collector.dropped();
      assert(droppedAgain > dropped, `a second overflow counts: ${dropped} -> ${droppedAgain}`);
      assertEquals(events + droppedAgain, 2 * burst, "every connect of both bursts is accounted");
    } finally {
      collector.stop();
      await removeCgroupDir(dir);
    }
  },
});
