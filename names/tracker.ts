/**
 * From captured DNS messages to names: a query StB sent is remembered; an answer counts
 * only when it answers such a query (same id, name and type), is well-formed, and its
 * addresses are the asked name's (through its CNAME chain). Each of its addresses is then
 * named by the asked name in the cache. Everything else is counted and dropped: a remote
 * can send StB any bytes from port 53, and none of them may crash the sampler or name an
 * address by a name StB did not ask for.
 */

import { DnsParseError, parseDnsAnswer, parseDnsQuery, peekDnsAnswer } from "./dns.ts";
import { NameCache, PendingQueries } from "./cache.ts";

/** What was captured, as counters.json's `names` publishes it. */
export interface NameStats {
  queries_total: number;
  answers_total: number;
  /** Answers that named addresses. */
  answers_used_total: number;
  /** Well-formed answers with nothing to use: no query waited for them, another name's addresses, an error code. */
  answers_ignored_total: number;
  /** Messages that are not DNS as RFC 1035 writes it (either way). */
  malformed_total: number;
}

export class NameTracker {
  readonly cache: NameCache;
  readonly queries: PendingQueries;
  readonly stats: NameStats = {
    queries_total: 0,
    answers_total: 0,
    answers_used_total: 0,
    answers_ignored_total: 0,
    malformed_total: 0,
  };
  /** Why the last answer was ignored (for tests and the log). */
  lastIgnored: string | null = null;

  constructor(now: () => number, maxNames?: number) {
    this.cache = new NameCache(now, maxNames);
    this.queries = new PendingQueries(now);
  }

  /** A query StB sent (`complete`: the capture holds the whole message). */
  query(bytes: Uint8Array, complete: boolean): void {
    this.stats.queries_total++;
    try {
      const q = parseDnsQuery(bytes);
      if (q) this.queries.add(q.id, q.name, q.type);
    } catch (e) {
      if (!(e instanceof DnsParseError) || complete) this.stats.malformed_total++;
    }
  }

  /**
   * An answer StB received. Its question is read first: an answer no query waits for is
   * dropped before its records are parsed, so what a remote sends unasked costs little.
   */
  answer(bytes: Uint8Array, complete: boolean): void {
    this.stats.answers_total++;
    let a;
    try {
      const q = peekDnsAnswer(bytes);
      if (q && !this.queries.has(q.id, q.name, q.type)) {
        return this.#ignore(`no query for ${q.name} (id ${q.id}) is waiting`);
      }
      a = parseDnsAnswer(bytes, complete);
    } catch {
      this.stats.malformed_total++;
      return;
    }
    if (a.kind === "ignored") return this.#ignore(a.reason);
    if (!this.queries.take(a.id, a.name, a.type)) {
      return this.#ignore(`no query for ${a.name} (id ${a.id}) is waiting`);
    }
    for (const { address, ttl } of a.addresses) this.cache.set(address, a.name, ttl);
    this.stats.answers_used_total++;
  }

  #ignore(reason: string): void {
    this.stats.answers_ignored_total++;
    this.lastIgnored = reason;
  }
}
