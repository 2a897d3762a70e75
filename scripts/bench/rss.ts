// Samples a process's resident set size from /proc while a benchmark runs.
import { readFileSync } from "node:fs";

export interface RssSampler {
  first: number;
  peak: number;
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
  const s: RssSampler = { first: readRss(pid), peak: 0, stop: () => clearInterval(timer) };
  s.peak = s.first;
  const timer = setInterval(() => {
    try {
      s.peak = Math.max(s.peak, readRss(pid));
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
