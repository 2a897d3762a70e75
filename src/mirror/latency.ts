// Observed time to response headers from peers, for hedging: a request that has waited longer
// than most peer answers take is probably stuck, so the next provider is asked too.
const SAMPLES = 256;
const MIN_SAMPLES = 16;

export class LatencyTracker {
  readonly #samples: number[] = [];
  #next = 0;

  observe(ms: number): void {
    if (this.#samples.length < SAMPLES) this.#samples.push(ms);
    else this.#samples[this.#next] = ms;
    this.#next = (this.#next + 1) % SAMPLES;
  }

  /** The p-th percentile (0-100) of recent samples, or undefined with too few samples. */
  percentile(p: number): number | undefined {
    if (this.#samples.length < MIN_SAMPLES) return undefined;
    const sorted = [...this.#samples].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
  }
}
