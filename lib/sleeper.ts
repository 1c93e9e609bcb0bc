/**
 * How `run` sleeps between samples: in one epoll_wait on the main thread, woken by the
 * timeout, by a file descriptor it watches (the cgroup watch's inotify) or by a signal. A
 * wake from a blocking epoll_wait costs a fraction of one through Deno's event loop
 * (docs/design.md, "Timing"). Deno runs signal listeners only when its event loop turns:
 * `sleep` says "interrupted" when a signal ended it, and the caller turns the loop
 * (run/sleep.ts). Where something must be served between samples (the metrics listener),
 * `sleepAsync` waits on a Deno worker thread with the event loop running, and `wake` ends
 * that wait.
 */

import { check, EAGAIN, EINTR, errno, libc, O_CLOEXEC, osError } from "./libc.ts";

export type WakeReason = "timeout" | "ready" | "interrupted";

const EPOLL_CTL_ADD = 1, EPOLLIN = 0x1;
const EFD_NONBLOCK = 0o4000, EFD_CLOEXEC = O_CLOEXEC;
/** struct epoll_event is packed on x86-64 (12 bytes), naturally aligned elsewhere (16). */
const EVENT_SIZE = Deno.build.arch === "x86_64" ? 12 : 16;
const EVENT_DATA_OFFSET = Deno.build.arch === "x86_64" ? 4 : 8;
const MAX_EVENTS = 8;

export class Sleeper {
  #epoll: number;
  #wakeFd: number;
  readonly #events = new Uint8Array(EVENT_SIZE * MAX_EVENTS);
  /** A buffer of its own: an async wait's buffer is written by another thread. */
  readonly #asyncEvents = new Uint8Array(EVENT_SIZE * MAX_EVENTS);
  readonly #counter = new Uint8Array(8);

  constructor() {
    const c = libc();
    this.#epoll = c.epoll_create1(O_CLOEXEC);
    check(this.#epoll, "epoll_create1");
    this.#wakeFd = c.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (this.#wakeFd < 0) {
      const e = errno();
      c.close(this.#epoll);
      throw osError(e, "eventfd");
    }
    try {
      this.watch(this.#wakeFd);
    } catch (e) {
      this.close();
      throw e;
    }
  }

  /** Makes `fd` becoming readable end a sleep; reading it is the owner's business. */
  watch(fd: number): void {
    const event = new Uint8Array(EVENT_SIZE);
    const view = new DataView(event.buffer);
    view.setUint32(0, EPOLLIN, true);
    view.setInt32(EVENT_DATA_OFFSET, fd, true);
    check(libc().epoll_ctl(this.#epoll, EPOLL_CTL_ADD, fd, event), `epoll_ctl add fd ${fd}`);
  }

  /** Blocks the thread up to `ms` (rounded up to whole milliseconds). */
  sleep(ms: number): WakeReason {
    const n = libc().epoll_wait(this.#epoll, this.#events, MAX_EVENTS, timeoutOf(ms));
    if (n < 0) {
      const e = errno();
      if (e === EINTR) return "interrupted";
      throw osError(e, "epoll_wait");
    }
    return this.#settle(n, this.#events);
  }

  /** Waits up to `ms` on a worker thread; the event loop runs meanwhile. */
  async sleepAsync(ms: number): Promise<WakeReason> {
    const n = await libc().epoll_wait_async(
      this.#epoll,
      this.#asyncEvents,
      MAX_EVENTS,
      timeoutOf(ms),
    );
    // errno lives on the worker thread; EINTR is the only failure a valid epoll fd has.
    if (n < 0) return "interrupted";
    return this.#settle(n, this.#asyncEvents);
  }

  /** Ends a sleep in progress, or makes the next one return at once ("ready"). */
  wake(): void {
    new DataView(this.#counter.buffer).setBigUint64(0, 1n, true);
    libc().write(this.#wakeFd, this.#counter, 8n); // only fails when the counter is full
  }

  /** Safe to call twice. */
  close(): void {
    const c = libc();
    if (this.#wakeFd >= 0) c.close(this.#wakeFd);
    if (this.#epoll >= 0) c.close(this.#epoll);
    this.#wakeFd = this.#epoll = -1;
  }

  #settle(n: number, events: Uint8Array): WakeReason {
    if (n === 0) return "timeout";
    const view = new DataView(events.buffer);
    for (let i = 0; i < n; i++) {
      if (view.getInt32(i * EVENT_SIZE + EVENT_DATA_OFFSET, true) !== this.#wakeFd) continue;
      // Reset the counter so the next sleep blocks again.
      if (libc().read(this.#wakeFd, this.#counter, 8n) < 0) {
        const e = errno();
        if (e !== EAGAIN) throw osError(e, "read eventfd");
      }
    }
    return "ready";
  }
}

function timeoutOf(ms: number): number {
  return Math.min(0x7fffffff, Math.max(0, Math.ceil(ms)));
}
