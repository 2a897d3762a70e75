// The two halves of the memory benchmark that do not depend on kagami: N concurrent clients
// that download one blob and hash it as it streams (curl | openssl dgst, outside the cgroup
// under test, so their memory is not counted), and a sampler of what a memory cgroup and one
// process inside it use (working set, its memory.stat breakdown at the peak, RSS).
import { readFileSync } from "node:fs";
import type { MemoryCgroup } from "../e2e/cgroup.ts";

export interface Download {
  status: number;
  bytes: number;
  /** curl's exit code (0: complete; 18: cut short; 28: timed out). */
  curlExit: number;
  sha256: string;
  /** Seconds from the start of the load to the end of this download. */
  endedAt: number;
}

export type Outcome = "ok" | "corrupted" | "notFound" | "failed";

/**
 * ok: all bytes, right hash; corrupted: all bytes, wrong hash; notFound: 404, which makes
 * containerd fall back to the next host (kagami shed the request, or found no peer in time).
 */
export function classify(d: Download, size: number, sha256: string): Outcome {
  if (d.status === 404) return "notFound";
  if (d.status !== 200 || d.curlExit !== 0 || d.bytes !== size) return "failed";
  return d.sha256 === sha256 ? "ok" : "corrupted";
}

// curl writes the body to openssl (a pipe: a slow hash back-pressures the download) and its
// status line to stderr; -r prints "<hex> *stdin".
const CLIENT = 'curl -sS --max-time "$1" -w "%{stderr}@@ %{http_code} %{size_download} %{exitcode}\\n" "$2" | openssl dgst -sha256 -r';

/**
 * Starts `count` downloads of `url` at once and waits for all of them. Each is bounded by
 * curl's --max-time and, as a backstop, by `timeout -s KILL`, which kills its whole process group.
 */
export async function downloadAll(url: string, count: number, maxSeconds: number): Promise<{ downloads: Download[]; seconds: number }> {
  const started = performance.now();
  const one = async (): Promise<Download> => {
    const child = Bun.spawn(["timeout", "-s", "KILL", String(maxSeconds + 15), "bash", "-c", CLIENT, "client", String(maxSeconds), url], {
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    });
    const [out, err] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
    const m = err.match(/^@@ (\d{3}) (\d+) (\d+)$/m);
    return {
      status: m ? Number(m[1]) : 0,
      bytes: m ? Number(m[2]) : 0,
      curlExit: m ? Number(m[3]) : -1,
      sha256: out.trim().split(/\s+/)[0] ?? "",
      endedAt: (performance.now() - started) / 1000,
    };
  };
  const downloads = await Promise.all(Array.from({ length: count }, one));
  return { downloads, seconds: (performance.now() - started) / 1000 };
}

/** The memory.stat fields that say where a cgroup's working set goes. */
export interface Breakdown {
  anon: number;
  activeFile: number;
  inactiveFile: number;
  mappedFile: number;
}

export interface MemoryPeaks {
  /** Highest working set sampled (usage - inactive file, as the kubelet computes it). */
  workingSet: number;
  /** memory.stat when the working set was highest. */
  atPeak: Breakdown;
  /** Highest anonymous memory sampled. */
  anon: number;
  /** Highest VmRSS sampled, and its file-backed part then. */
  rss: number;
  rssFile: number;
  samples: number;
  /** Longest gap between two samples: a spike shorter than this may be missed. */
  maxGapMs: number;
}

/** Messages to the sampler worker (memory-sampler.ts). */
export type ToSampler = { type: "start"; cgroupPath: string; version: 1 | 2; pid: number; everyMs: number } | { type: "stop" };

/** The process's peak resident set as the kernel kept it (VmHWM); 0 once it is gone. */
export function rssHighWater(pid: number): number {
  try {
    const m = readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmHWM:\s+(\d+) kB/m);
    return Number(m?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
}

export interface Sampler {
  stop(): Promise<MemoryPeaks>;
}

/**
 * Samples the cgroup and the process every `everyMs` until stopped, in a Worker: the main
 * thread spawns and reaps the clients and would delay a timer by hundreds of milliseconds.
 */
export function sampleMemory(cg: MemoryCgroup, pid: number, everyMs = 10): Sampler {
  const worker = new Worker(new URL("./memory-sampler.ts", import.meta.url).href);
  worker.postMessage({ type: "start", cgroupPath: cg.path, version: cg.version, pid, everyMs } satisfies ToSampler);
  return {
    stop: () =>
      new Promise<MemoryPeaks>((resolve, reject) => {
        const timer = setTimeout(() => {
          void worker.terminate();
          reject(new Error("memory sampler did not answer"));
        }, 5000);
        worker.onmessage = (e: MessageEvent<MemoryPeaks>) => {
          clearTimeout(timer);
          void worker.terminate();
          resolve(e.data);
        };
        worker.postMessage({ type: "stop" } satisfies ToSampler);
      }),
  };
}

/** The cgroup's peak usage as the kernel kept it (page cache included): memory.max_usage_in_bytes (v1) / memory.peak (v2). */
export function peakUsage(cg: MemoryCgroup): number | null {
  try {
    return Number(readFileSync(`${cg.path}/${cg.version === 1 ? "memory.max_usage_in_bytes" : "memory.peak"}`, "utf8").trim());
  } catch {
    return null;
  }
}
