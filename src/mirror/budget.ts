// The byte budget seam: every chunk the mirror path holds in userspace is taken from it.
// The governor's ByteBudget (src/governor/budget.ts) fits this shape; without one, a fixed
// per-stream read-ahead still bounds each download.
export interface Budget {
  /** Resolves once `bytes` are granted; rejects with the signal's reason when it aborts first. */
  acquire(bytes: number, signal?: AbortSignal): Promise<unknown>;
  release(bytes: number): void;
}

/** A budget that grants everything (accounting off). */
export const UNLIMITED_BUDGET: Budget = {
  acquire: () => Promise.resolve(),
  release: () => {},
};
