// Providers of a key, found once and shared: concurrent requests for one key join a single
// router lookup (single-flight), and its result is kept a few seconds for the requests that
// follow (a pull asks for many layers of one image at once, and several nodes pull together).
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
  /** Limit of one router lookup. */
  lookupTimeoutMs?: number;
  /** Cap on cached keys. */
  maxEntries?: number;
}

export class ProviderCache {
  readonly #router: Router;
  readonly #opts: Required<ProviderCacheOptions>;
  readonly #sets = new Map<string, ProviderSet>();

  constructor(router: Router, opts: ProviderCacheOptions) {
    this.#router = router;
    this.#opts = { ttlMs: 5000, emptyTtlMs: 1000, lookupTimeoutMs: 5000, maxEntries: 1024, ...opts };
  }

  /** The cached or running lookup of a key, or a new one. */
  get(key: string): ProviderSet {
    const cached = this.#sets.get(key);
    if (cached && !this.#expired(cached)) return cached;
    if (cached) this.#sets.delete(key);
    const set = new ProviderSet();
    this.#sets.set(key, set);
    while (this.#sets.size > this.#opts.maxEntries) {
      const oldest = this.#sets.keys().next().value;
      if (oldest === undefined) break;
      this.#sets.delete(oldest);
    }
    void this.#run(key, set);
    return set;
  }

  #expired(set: ProviderSet): boolean {
    if (!set.done) return false;
    const age = performance.now() - set.created;
    const live = set.peers.length - set.missing.size;
    return age > (live > 0 ? this.#opts.ttlMs : this.#opts.emptyTtlMs);
  }

  async #run(key: string, set: ProviderSet): Promise<void> {
    try {
      for await (const peer of this.#router.lookup(key, this.#opts.count, AbortSignal.timeout(this.#opts.lookupTimeoutMs))) {
        set.add(peer);
      }
    } catch {
      // A failed lookup is an empty one; the registry goes upstream.
    } finally {
      set.finish();
    }
  }
}
