// Fan-out of StoreEvents to watchers. Each watcher has a bounded queue: a watcher that
// falls behind gets its queue replaced by one `resync` (it re-lists), so a slow consumer
// costs neither memory nor other watchers' events.
import type { StoreEvent } from "./store.ts";

const MAX_QUEUED = 4096;

interface Watcher {
  queue: StoreEvent[];
  wake?: () => void;
}

export class EventHub {
  private readonly watchers = new Set<Watcher>();

  get size(): number {
    return this.watchers.size;
  }

  publish(event: StoreEvent): void {
    for (const w of this.watchers) {
      if (w.queue.length >= MAX_QUEUED) w.queue = [{ type: "resync" }];
      else w.queue.push(event);
      w.wake?.();
    }
  }

  async *subscribe(signal: AbortSignal): AsyncIterable<StoreEvent> {
    if (signal.aborted) return;
    const w: Watcher = { queue: [] };
    const onAbort = () => w.wake?.();
    signal.addEventListener("abort", onAbort, { once: true });
    this.watchers.add(w);
    try {
      while (!signal.aborted) {
        const next = w.queue.shift();
        if (next) {
          yield next;
          continue;
        }
        await new Promise<void>((resolve) => {
          w.wake = resolve;
        });
        w.wake = undefined;
      }
    } finally {
      this.watchers.delete(w);
      signal.removeEventListener("abort", onAbort);
    }
  }
}
