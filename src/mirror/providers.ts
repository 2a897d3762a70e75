// Providers of a key, found once and shared: concurrent requests for one key join a single
// router lookup (single-flight), and its result is kept a few seconds for the requests that
// follow (a pull asks for many layers of one image at once, and several nodes pull together).
// After that a result with live providers is still answered at once while a new lookup runs
// (stale-while-revalidate): in a burst of 200 clients the DHT lookup of an expired key took
// longer than --mirror-resolve-timeout (20 ms) and 5-28 of them went upstream needlessly
// (scripts/bench/memory.ts, peer scenario).
import type { Peer, Router } from "../routing/router.ts";

export class ProviderSet {
  readonly peers: Peer[] = [];
  /** Peers that answered 404 for this key: skipped by later requests while the set is cached. */
  readonly missing = new Set<string>();
  readonly created = performance.now();
  done = false;
  #waiters = new Set<() => void>();

  add(peer: Peer): void {
    this.peers.push(peer);
    this.#wake();
  }

  finish(): void {
    this.done = true;
    this.#wake();
  }

  #wake(): void {
    for (const w of this.#waiters) w();
    this.#waiters.clear();
  }

  /** Peer number i, waiting at most waitMs for it; undefined when the lookup ended first. */
  async next(i: number, signal: AbortSignal, waitMs: number): Promise<Peer | undefined> {
    const deadline = performance.now() + waitMs;
    while (i >= this.peers.length && !this.done && !signal.aborted) {
      const left = deadline - performance.now();
      if (left <= 0) break;
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          signal.removeEventListener("abort", done);
          this.#waiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, left);
        signal.addEventListener("abort", done, { once: true });
        this.#waiters.add(done);
      });
    }
    return this.peers[i];
  }
}

export interface ProviderCacheOptions {
  /** Most providers one lookup collects. */
  count: number;
  /** How long a finished lookup's result is reused. */
  ttlMs?: number;
  /** A lookup that found nobody is retried sooner: content may just have been advertised. */
  emptyTtlMs?: number;
  /** How long after ttlMs a result with live providers is still used while a new lookup runs. */
  staleMs?: number;
  /** Limit of one router lookup. */
  lookupTimeoutMs?: number;
  /** Cap on cached keys. */
  maxEntries?: number;
}

export class ProviderCache {
  readonly #router: Router;
  readonly #opts: Required<ProviderCacheOptions>;
  readonly #sets = new Map<string, ProviderSet>();
  /** Lookups renewing a stale set; it replaces the stale one when done. */
  readonly #renewing = new Map<string, ProviderSet>();

  constructor(router: Router, opts: ProviderCacheOptions) {
    this.#router = router;
    this.#opts = { ttlMs: 5000, emptyTtlMs: 1000, staleMs: 60_000, lookupTimeoutMs: 5000, maxEntries: 1024, ...opts };
  }

  /** The cached or running lookup of a key, or a new one. */
  get(key: string): ProviderSet {
    const cached = this.#sets.get(key);
    if (cached && !this.#expired(cached)) return cached;
    if (cached && this.#stillUsable(cached)) {
      if (!this.#renewing.has(key)) {
        const set = new ProviderSet();
        capped(this.#renewing, this.#opts.maxEntries).set(key, set);
        void this.#run(key, set, true);
      }
      return cached;
    }
    const set = new ProviderSet();
    this.#put(key, set);
    void this.#run(key, set, false);
    return set;
  }

  #put(key: string, set: ProviderSet): void {
    this.#sets.delete(key);
    capped(this.#sets, this.#opts.maxEntries).set(key, set);
  }

  #live(set: ProviderSet): number {
    return set.peers.length - set.missing.size;
  }

  #expired(set: ProviderSet): boolean {
    if (!set.done) return false;
    const age = performance.now() - set.created;
    return age > (this.#live(set) > 0 ? this.#opts.ttlMs : this.#opts.emptyTtlMs);
  }

  #stillUsable(set: ProviderSet): boolean {
    return this.#live(set) > 0 && performance.now() - set.created <= this.#opts.ttlMs + this.#opts.staleMs;
  }

  async #run(key: string, set: ProviderSet, renewal: boolean): Promise<void> {
    try {
      for await (const peer of this.#router.lookup(key, this.#opts.count, AbortSignal.timeout(this.#opts.lookupTimeoutMs))) {
        set.add(peer);
      }
    } catch {
      // A failed lookup is an empty one; the registry goes upstream.
    } finally {
      set.finish();
      if (renewal && this.#renewing.get(key) === set) {
        this.#renewing.delete(key);
        this.#put(key, set);
      }
    }
  }
}

/** `map` with room for one more entry: the oldest entries beyond `max - 1` are dropped. */
function capped<V>(map: Map<string, V>, max: number): Map<string, V> {
  while (map.size >= max) {
    const oldest = map.keys().next().value;
    if (oldest === undefined) break;
    map.delete(oldest);
  }
  return map;
}
