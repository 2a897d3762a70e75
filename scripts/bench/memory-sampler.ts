// Worker of the memory benchmark (see sampleMemory in memory-load.ts): reads a memory cgroup
// and one process every few milliseconds and keeps the peaks, with the cgroup's memory.stat
// breakdown at the highest working set.
import { readFileSync } from "node:fs";
import type { Breakdown, MemoryPeaks, ToSampler } from "./memory-load.ts";

declare const self: Worker;

const peaks: MemoryPeaks = {
  workingSet: 0,
  atPeak: { anon: 0, activeFile: 0, inactiveFile: 0, mappedFile: 0 },
  anon: 0,
  rss: 0,
  rssFile: 0,
  samples: 0,
  maxGapMs: 0,
};
let timer: ReturnType<typeof setInterval> | undefined;
let last = 0;

function stat(dir: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of readFileSync(`${dir}/memory.stat`, "utf8").split("\n")) {
    const [k, v] = line.split(" ");
    if (k && v) out.set(k, Number(v));
  }
  return out;
}

function breakdown(s: Map<string, number>, v1: boolean): Breakdown {
  return {
    anon: (v1 ? s.get("total_rss") : s.get("anon")) ?? 0,
    activeFile: (v1 ? s.get("total_active_file") : s.get("active_file")) ?? 0,
    inactiveFile: (v1 ? s.get("total_inactive_file") : s.get("inactive_file")) ?? 0,
    mappedFile: (v1 ? s.get("total_mapped_file") : s.get("file_mapped")) ?? 0,
  };
}

function sample(dir: string, v1: boolean, pid: number): void {
  const now = performance.now();
  if (last > 0) peaks.maxGapMs = Math.max(peaks.maxGapMs, now - last);
  last = now;
  try {
    const usage = Number(readFileSync(`${dir}/${v1 ? "memory.usage_in_bytes" : "memory.current"}`, "utf8").trim());
    const b = breakdown(stat(dir), v1);
    const ws = Math.max(0, usage - b.inactiveFile);
    peaks.samples++;
    if (ws > peaks.workingSet) {
      peaks.workingSet = ws;
      peaks.atPeak = b;
    }
    peaks.anon = Math.max(peaks.anon, b.anon);
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kib = (key: string) => Number(status.match(new RegExp(`^${key}:\\s+(\\d+) kB`, "m"))?.[1] ?? 0) * 1024;
    const rss = kib("VmRSS");
    if (rss > peaks.rss) {
      peaks.rss = rss;
      peaks.rssFile = kib("RssFile");
    }
  } catch {
    // The process is gone (killed); the cgroup may still be read next time.
  }
}

self.onmessage = (e: MessageEvent<ToSampler>) => {
  const m = e.data;
  if (m.type === "start") {
    const v1 = m.version === 1;
    sample(m.cgroupPath, v1, m.pid);
    timer = setInterval(() => sample(m.cgroupPath, v1, m.pid), m.everyMs);
    self.onmessage = (stop: MessageEvent<ToSampler>) => {
      if (stop.data.type !== "stop") return;
      clearInterval(timer);
      sample(m.cgroupPath, v1, m.pid);
      postMessage(peaks);
    };
  }
};
