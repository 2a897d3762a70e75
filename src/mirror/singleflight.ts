// One in-flight task per key: concurrent callers for the same key share the first caller's
// promise. Bounded: past `max` different keys in flight, new keys are refused at once
// (SingleFlightFullError) rather than queued, so a flood of distinct digests costs nothing.

export class SingleFlightFullError extends Error {
  override readonly name = "SingleFlightFullError";
}

export class SingleFlight<K, V> {
  private readonly inflight = new Map<K, Promise<V>>();

  constructor(readonly max: number) {}

  get size(): number {
    return this.inflight.size;
  }

  has(key: K): boolean {
    return this.inflight.has(key);
  }

  /** The running task for key, or a new one started with start(). */
  run(key: K, start: () => Promise<V>): Promise<V> {
    const running = this.inflight.get(key);
    if (running) return running;
    if (this.inflight.size >= this.max) {
      return Promise.reject(new SingleFlightFullError(`${this.inflight.size} fetches already in flight`));
    }
    const p = start().finally(() => {
      if (this.inflight.get(key) === p) this.inflight.delete(key);
    });
    this.inflight.set(key, p);
    return p;
  }
}
