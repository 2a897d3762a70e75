// Samples a process's resident set size from /proc while a benchmark runs.
import { readFileSync } from "node:fs";

export interface RssSampler {
  first: number;
  peak: number;
  /** Anonymous memory (heap, buffers): what grows with load; the rest is the executable's pages. */
  firstAnon: number;
  peakAnon: number;
  stop(): void;
}

/** RSS split as /proc/<pid>/status does: anonymous (heap, stacks) and file-backed (the executable's pages). */
export function readRssParts(pid: number): { rss: number; anon: number; file: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0) * 1024;
  return { rss: kb("VmRSS"), anon: kb("RssAnon"), file: kb("RssFile") };
}

export function readRss(pid: number): number {
  const m = readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmRSS:\s+(\d+) kB/m);
  return m ? Number(m[1]) * 1024 : 0;
}

export function sampleRss(pid: number, everyMs: number): RssSampler {
  const start = readRssParts(pid);
  const s: RssSampler = { first: start.rss, peak: start.rss, firstAnon: start.anon, peakAnon: start.anon, stop: () => clearInterval(timer) };
  const timer = setInterval(() => {
    try {
      const now = readRssParts(pid);
      s.peak = Math.max(s.peak, now.rss);
      s.peakAnon = Math.max(s.peakAnon, now.anon);
    } catch {
      clearInterval(timer);
    }
  }, everyMs);
  return s;
}

export function peakRss(s: RssSampler): number {
  s.stop();
  return s.peak;
}
