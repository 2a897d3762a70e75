// Samples a process's resident set size from /proc while a benchmark runs.
import { readFileSync } from "node:fs";

export interface RssSampler {
  first: number;
  peak: number;
  stop(): void;
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
