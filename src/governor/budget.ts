// One byte budget for every userspace buffer on the data path. Readers acquire bytes before
// they read a chunk and release them once the chunk is gone; when the budget is spent they
// wait in one FIFO queue, so the source is back-pressured and no reader starves: a request is
// granted only after every request queued before it.

/** The waiting queue is full: the caller should shed the request instead of queueing it. */
export class BudgetQueueFullError extends Error {
  override readonly name = "BudgetQueueFullError";
}

export interface BudgetOptions {
  /** Bytes that may be held at once; Infinity for an unbounded (accounting only) budget. */
  total: number;
  /** Cap on queued acquires; past it acquire rejects with BudgetQueueFullError. */
  maxWaiters?: number | undefined;
}

interface Waiter {
  bytes: number;
  resolve: (granted: number) => void;
  reject: (reason: unknown) => void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  prev: Waiter | null;
  next: Waiter | null;
}

export const DEFAULT_MAX_WAITERS = 16_384;

export class ByteBudget {
  #total: number;
  readonly maxWaiters: number;
  #inUse = 0;
  #peak = 0;
  #waiters = 0;
  // A doubly linked list: an aborted waiter leaves from the middle in O(1).
  #head: Waiter | null = null;
  #tail: Waiter | null = null;

  constructor(opts: BudgetOptions) {
    if (!(opts.total > 0)) throw new RangeError(`budget total must be positive, got ${opts.total}`);
    this.#total = opts.total;
    this.maxWaiters = opts.maxWaiters ?? DEFAULT_MAX_WAITERS;
  }

  get total(): number {
    return this.#total;
  }

  /**
   * Changes the total (the limit was changed live). Lowering it does not take bytes back:
   * new grants wait until inUse falls under the new total.
   */
  resize(total: number): void {
    if (!(total > 0)) throw new RangeError(`budget total must be positive, got ${total}`);
    this.#total = total;
    this.#grant();
  }

  get full(): boolean {
    return this.#waiters >= this.maxWaiters;
  }

  get inUse(): number {
    return this.#inUse;
  }

  /** Highest inUse seen since creation. */
  get peakInUse(): number {
    return this.#peak;
  }

  get waiters(): number {
    return this.#waiters;
  }

  get unbounded(): boolean {
    return this.#total === Infinity;
  }

  #validate(bytes: number): number {
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`invalid byte count ${bytes}`);
    return bytes;
  }

  // A request larger than the whole budget is granted alone, once every other holder has
  // released: inUse may then exceed total, but by one request only.
  #fits(n: number): boolean {
    return this.#inUse === 0 || this.#inUse + n <= this.#total;
  }

  /**
   * Resolves with `bytes` once they are free and every earlier request was granted; the caller
   * then owes release(bytes). Rejects with the signal's reason if it aborts first (nothing is
   * then held), or with BudgetQueueFullError when maxWaiters already wait.
   */
  acquire(bytes: number, signal?: AbortSignal): Promise<number> {
    const n = this.#validate(bytes);
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (n === 0) return Promise.resolve(0);
    if (this.#head === null && this.#fits(n)) {
      this.#take(n);
      return Promise.resolve(n);
    }
    if (this.full) {
      return Promise.reject(new BudgetQueueFullError(`${this.#waiters} readers already wait for the byte budget`));
    }
    return new Promise<number>((resolve, reject) => {
      const waiter: Waiter = { bytes: n, resolve, reject, signal, onAbort: undefined, prev: this.#tail, next: null };
      if (signal) {
        waiter.onAbort = () => {
          this.#unlink(waiter);
          reject(signal.reason);
          // The head may have been the one blocking those behind it.
          this.#grant();
        };
        signal.addEventListener("abort", waiter.onAbort, { once: true });
      }
      if (this.#tail) this.#tail.next = waiter;
      else this.#head = waiter;
      this.#tail = waiter;
      this.#waiters++;
    });
  }

  release(bytes: number): void {
    const n = this.#validate(bytes);
    if (n > this.#inUse) throw new RangeError(`release of ${n} bytes exceeds the ${this.#inUse} in use`);
    this.#inUse -= n;
    this.#grant();
  }

  #take(n: number): void {
    this.#inUse += n;
    if (this.#inUse > this.#peak) this.#peak = this.#inUse;
  }

  #grant(): void {
    while (this.#head !== null && this.#fits(this.#head.bytes)) {
      const waiter = this.#head;
      this.#unlink(waiter);
      this.#take(waiter.bytes);
      waiter.resolve(waiter.bytes);
    }
  }

  #unlink(w: Waiter): void {
    if (w.onAbort) w.signal?.removeEventListener("abort", w.onAbort);
    w.onAbort = undefined;
    if (w.prev) w.prev.next = w.next;
    else this.#head = w.next;
    if (w.next) w.next.prev = w.prev;
    else this.#tail = w.prev;
    w.prev = w.next = null;
    this.#waiters--;
  }
}
