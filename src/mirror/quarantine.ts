// Peers that served bytes that did not match their digest are not asked again for a while.
export class Quarantine {
  readonly #until = new Map<string, number>();

  constructor(
    readonly durationMs: number,
    readonly maxEntries = 1024,
  ) {}

  add(peerId: string): void {
    this.#until.delete(peerId);
    this.#until.set(peerId, Date.now() + this.durationMs);
    while (this.#until.size > this.maxEntries) {
      const oldest = this.#until.keys().next().value;
      if (oldest === undefined) break;
      this.#until.delete(oldest);
    }
  }

  has(peerId: string): boolean {
    const until = this.#until.get(peerId);
    if (until === undefined) return false;
    if (until > Date.now()) return true;
    this.#until.delete(peerId);
    return false;
  }

  get size(): number {
    return this.#until.size;
  }
}
