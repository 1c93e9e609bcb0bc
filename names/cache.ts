/**
 * What the sampler remembers of DNS: the names of addresses (NameCache) and the queries
 * StB sent that are still waiting for an answer (PendingQueries). Both have a fixed
 * number of entries: a flood of answers or queries evicts the least recently used, so
 * memory stays bounded whatever a remote sends.
 */

/** Address -> name entries kept at most. */
export const MAX_NAMES = 4096;
/**
 * A name is kept for its TTL but at least this long: a connection outlives the TTL of the
 * answer that opened it (60 s is common), and its destination should keep its name.
 */
export const MIN_KEEP_S = 600;
/** Queries waiting for an answer, at most, and how long one waits. */
export const MAX_PENDING_QUERIES = 1024;
export const QUERY_WAIT_S = 30;

interface Named {
  name: string;
  /** Seconds on the cache's clock. */
  expires: number;
}

/** Address -> name with expiry; least recently used out first beyond `max` entries. */
export class NameCache {
  readonly #entries = new Map<string, Named>();
  /** Entries evicted to make room (not expired ones). */
  evicted = 0;

  constructor(
    readonly now: () => number,
    readonly max = MAX_NAMES,
  ) {}

  get size(): number {
    return this.#entries.size;
  }

  /** Remembers `name` for `address` (the newest answer wins) for max(ttl, MIN_KEEP_S). */
  set(address: string, name: string, ttl: number): void {
    this.#entries.delete(address);
    this.#entries.set(address, { name, expires: this.now() + Math.max(ttl, MIN_KEEP_S) });
    while (this.#entries.size > this.max) {
      // Map keeps insertion order: the first key is the least recently used.
      this.#entries.delete(this.#entries.keys().next().value!);
      this.evicted++;
    }
  }

  /** The name of `address` while it has not expired; a hit makes it the most recent. */
  get(address: string): string | undefined {
    const e = this.#entries.get(address);
    if (e === undefined) return undefined;
    this.#entries.delete(address);
    if (e.expires <= this.now()) return undefined;
    this.#entries.set(address, e);
    return e.name;
  }
}

/** Queries StB sent, by id, name and type, until answered or QUERY_WAIT_S old. */
export class PendingQueries {
  readonly #queries = new Map<string, number>();

  constructor(
    readonly now: () => number,
    readonly max = MAX_PENDING_QUERIES,
  ) {}

  get size(): number {
    return this.#queries.size;
  }

  add(id: number, name: string, type: number): void {
    const key = `${id}/${type}/${name}`;
    this.#queries.delete(key);
    this.#queries.set(key, this.now() + QUERY_WAIT_S);
    while (this.#queries.size > this.max) this.#queries.delete(this.#queries.keys().next().value!);
  }

  /** Whether such a query waits (and has not expired); it goes on waiting. */
  has(id: number, name: string, type: number): boolean {
    const expires = this.#queries.get(`${id}/${type}/${name}`);
    return expires !== undefined && expires > this.now();
  }

  /** Whether such a query waits (it then no longer does: one answer per query). */
  take(id: number, name: string, type: number): boolean {
    const key = `${id}/${type}/${name}`;
    const expires = this.#queries.get(key);
    if (expires === undefined) return false;
    this.#queries.delete(key);
    return expires > this.now();
  }
}
