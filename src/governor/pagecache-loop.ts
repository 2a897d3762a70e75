// The loop that drops page cache of served files when the working set passes the soft
// threshold. It runs in a Worker: under heavy sendfile load the main thread's timers lag by
// 250 ms to 1 s (measured: 50 clients x 256 MiB, 20 ms interval, max lag 245-972 ms) while a
// hot file refills its page cache at ~1 GB/s. In a Worker it samples every 25 ms whatever the
// main thread does (measured in a 128Mi cgroup: peak working set 96 MiB and mean 40 MiB, against
// 123-127 MiB and 75-85 MiB from the main thread). Inline (on the governor's own samples) where
// a Worker cannot start, and in unit tests.
import type { MemoryCgroup } from "./cgroup.ts";
import { ServedFiles } from "./pagecache.ts";
import { pageCacheExcess, type Pressure, type Thresholds } from "./policy.ts";

export interface PageCacheStats {
  mode: "worker" | "inline";
  samples: number;
  droppedFiles: number;
  droppedBytes: number;
}

export interface PageCacheLoop {
  served(path: string, size: number): void;
  sending(path: string, size: number): () => void;
  /** The governor sampled memory: the inline loop acts on it, the worker takes its thresholds. */
  sampled(p: Pressure, t: Thresholds): void;
  stats(): PageCacheStats;
  stop(): void;
}

/** Messages to the worker (pagecache-worker.ts). */
export type ToWorker =
  | { type: "start"; cgroup: MemoryCgroup; intervalMs: number }
  /** active: the cgroup's figures are kagami's own (see pressureOf), so its page cache counts. */
  | { type: "thresholds"; thresholds: Thresholds; active: boolean }
  | { type: "served"; path: string; size: number }
  | { type: "sending"; id: number; path: string; size: number }
  | { type: "sent"; id: number };

/** Messages from the worker. */
export type FromWorker = { type: "stats"; samples: number; droppedFiles: number; droppedBytes: number };

export const WORKER_INTERVAL_MS = 25;

// From source the worker sits beside this module. A compiled executable holds its modules
// under /$bunfs/root/, named relative to the entry points' common directory (src/):
// scripts/build.ts must list src/governor/pagecache-worker.ts as an entry point.
function workerSpecifier(): string {
  return import.meta.url.includes("/$bunfs/") ? "./governor/pagecache-worker.ts" : new URL("./pagecache-worker.ts", import.meta.url).href;
}

export function inlineLoop(files: ServedFiles): PageCacheLoop {
  let dropping = false;
  const stats: PageCacheStats = { mode: "inline", samples: 0, droppedFiles: 0, droppedBytes: 0 };
  return {
    served: (path, size) => files.served(path, size),
    sending: (path, size) => files.sending(path, size),
    sampled(p, t) {
      stats.samples++;
      const excess = pageCacheExcess(p, t, dropping);
      dropping = excess > 0;
      if (!dropping) return;
      const r = files.dropColdest(excess, true);
      stats.droppedFiles += r.files;
      stats.droppedBytes += r.bytes;
    },
    stats: () => ({ ...stats }),
    stop: () => {},
  };
}

/**
 * Starts the loop `start` makes at the first file served: until then kagami has no page cache
 * to drop, and an idle node keeps no thread that wakes 4 times a second (the worker's JS runtime
 * costs ~2 MiB of anonymous memory, measured with scripts/bench/startup.ts).
 */
export function lazyLoop(start: () => PageCacheLoop, mode: PageCacheStats["mode"]): PageCacheLoop {
  let loop: PageCacheLoop | undefined;
  let last: { p: Pressure; t: Thresholds } | undefined;
  const started = (): PageCacheLoop => {
    if (!loop) {
      loop = start();
      if (last) loop.sampled(last.p, last.t);
    }
    return loop;
  };
  return {
    served: (path, size) => started().served(path, size),
    sending: (path, size) => started().sending(path, size),
    sampled(p, t) {
      last = { p, t };
      loop?.sampled(p, t);
    },
    stats: () => loop?.stats() ?? { mode, samples: 0, droppedFiles: 0, droppedBytes: 0 },
    stop: () => loop?.stop(),
  };
}

/**
 * Starts the worker; `onFailure` is told if it cannot run (e.g. a compiled executable built
 * without src/governor/pagecache-worker.ts as an entry point), so the caller can go inline.
 */
export function workerLoop(cgroup: MemoryCgroup, onFailure: (error: unknown) => void, intervalMs = WORKER_INTERVAL_MS): PageCacheLoop {
  const worker = new Worker(workerSpecifier());
  // The worker never keeps the process alive.
  worker.unref();
  const stats: PageCacheStats = { mode: "worker", samples: 0, droppedFiles: 0, droppedBytes: 0 };
  let failed = false;
  worker.addEventListener("message", (e: MessageEvent<FromWorker>) => {
    if (e.data.type === "stats") Object.assign(stats, { samples: e.data.samples, droppedFiles: e.data.droppedFiles, droppedBytes: e.data.droppedBytes });
  });
  worker.addEventListener("error", (e) => {
    if (failed) return;
    failed = true;
    worker.terminate();
    onFailure(e.error ?? e.message);
  });
  const post = (m: ToWorker): void => {
    if (!failed) worker.postMessage(m);
  };
  post({ type: "start", cgroup, intervalMs });
  let nextId = 0;
  let told = "";
  return {
    served: (path, size) => post({ type: "served", path, size }),
    sending(path, size) {
      const id = nextId++;
      post({ type: "sending", id, path, size });
      let done = false;
      return () => {
        if (done) return;
        done = true;
        post({ type: "sent", id });
      };
    },
    sampled(p, thresholds) {
      const active = p.measuredBy === "cgroup";
      const key = `${thresholds.soft}/${thresholds.hysteresis}/${active}`;
      if (key === told) return;
      told = key;
      post({ type: "thresholds", thresholds, active });
    },
    stats: () => ({ ...stats }),
    stop() {
      failed = true;
      worker.terminate();
    },
  };
}
