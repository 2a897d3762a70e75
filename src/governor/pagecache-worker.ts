// Worker entry of the page-cache loop (see pagecache-loop.ts): samples the cgroup on its own
// timer and drops page cache of served files, coldest first, while the working set is above
// the soft threshold. A compiled executable must be built with this file as an entry point.
import { readWorkingSet, type MemoryCgroup } from "./cgroup.ts";
import type { FromWorker, ToWorker } from "./pagecache-loop.ts";
import { ServedFiles } from "./pagecache.ts";
import { pageCacheExcess, type Thresholds } from "./policy.ts";

declare const self: Worker;

const files = new ServedFiles();
const sending = new Map<number, () => void>();
// A caller that never says "sent" must not grow the map without bound.
const MAX_SENDING = 16_384;
let cgroup: MemoryCgroup | null = null;
let thresholds: Thresholds | null = null;
let active = false;
const stats = { samples: 0, droppedFiles: 0, droppedBytes: 0 };
let lastReport = 0;
let dropping = false;
let fastMs = 25;
// Sampling every 25 ms costs ~2% of a core; it is needed only near the threshold. Far below it
// (under half of it for 5 s) the loop samples every 250 ms.
const SLOW_MS = 250;
const FAST_FOR_MS = 5000;
let busyAt = -Infinity;

function report(): void {
  const now = Date.now();
  if (now - lastReport < 1000) return;
  lastReport = now;
  postMessage({ type: "stats", ...stats } satisfies FromWorker);
}

function tick(): void {
  sample();
  setTimeout(tick, Date.now() - busyAt < FAST_FOR_MS ? fastMs : SLOW_MS);
}

function sample(): void {
  // Nothing tracked, nothing to drop: no need to read the cgroup.
  if (cgroup === null || thresholds === null || !active || files.size === 0) return;
  stats.samples++;
  const workingSet = readWorkingSet(cgroup);
  if (workingSet === null) return;
  if (workingSet >= thresholds.soft / 2) busyAt = Date.now();
  const excess = pageCacheExcess({ workingSet, committed: 0, measuredBy: "cgroup" }, thresholds, dropping);
  dropping = excess > 0;
  if (dropping) {
    const r = files.dropColdest(excess, true);
    stats.droppedFiles += r.files;
    stats.droppedBytes += r.bytes;
  }
  report();
}

self.onmessage = (e: MessageEvent<ToWorker>) => {
  const m = e.data;
  switch (m.type) {
    case "start":
      cgroup = m.cgroup;
      fastMs = m.intervalMs;
      tick();
      break;
    case "thresholds":
      thresholds = m.thresholds;
      active = m.active;
      break;
    case "served":
      files.served(m.path, m.size);
      break;
    case "sending":
      if (sending.size < MAX_SENDING) sending.set(m.id, files.sending(m.path, m.size));
      else files.served(m.path, m.size);
      break;
    case "sent":
      sending.get(m.id)?.();
      sending.delete(m.id);
      break;
  }
};
