// The governor's numbers: which limit applies, how large the byte budget is, and the pressure
// level of a memory reading. Pure: no I/O, so every rule is tested alone.
import type { MemorySample } from "./cgroup.ts";

export type PressureLevel = "ok" | "soft" | "hard";
export const LEVELS: readonly PressureLevel[] = ["ok", "soft", "hard"];

/** Why a request was turned away (the label of kagami_shed_requests_total). */
export type ShedReason = "memory_pressure" | "budget_queue_full";
export const SHED_REASONS: readonly ShedReason[] = ["memory_pressure", "budget_queue_full"];

export type LimitSource = "flag" | "cgroup" | "default";

export interface Limit {
  bytes: number;
  source: LimitSource;
}

const MiB = 2 ** 20;
const GiB = 2 ** 30;

/**
 * Without a limit anywhere: a quarter of the machine's memory, at most 512 MiB. A node cache
 * serves files by sendfile and needs little heap; Spegel users settled on a 128Mi cap.
 */
export function defaultLimit(totalMemory: number): number {
  return Math.max(128 * MiB, Math.min(512 * MiB, Math.floor(totalMemory / 4)));
}

export function resolveLimit(flag: number | undefined, cgroupLimit: number | null, totalMemory: number): Limit {
  if (flag !== undefined) return { bytes: flag, source: "flag" };
  if (cgroupLimit !== null) return { bytes: cgroupLimit, source: "cgroup" };
  return { bytes: defaultLimit(totalMemory), source: "default" };
}

/**
 * The byte budget is 1/12 of the limit (10.7 MiB at 128Mi), between 2 MiB and 256 MiB.
 * Measured here (Bun 1.4.5, x86_64, `bun build --compile --bytecode`, all of kagami's imports:
 * hono, pino, prom-client, libp2p + kad-dht + tcp + noise + yamux + identify, an idle
 * Bun.serve): RSS 61 MiB = 13 MiB anonymous + 48 MiB of the executable's mapped pages, which
 * the cgroup charges as page cache in the working set. That is 48% of a 128Mi limit before any
 * request. Bytes released from the budget stay allocated until the GC collects them, and 200
 * proxied streams add ~20 MiB of connection state besides. scripts/bench/memory.ts (peer, 128Mi,
 * 10 then 200 streams) grew the RSS by 7.6-15.5 MiB with 1/8 (16 MiB, four runs) and by
 * 6.6-11.6 MiB with 1/12 (three runs), at 0.48-0.49 against 0.49-0.50 GB/s: a peer stream is
 * bound by sha256, not by bytes in flight, so the smaller budget costs ~2% and keeps the growth
 * clear of 16 MiB.
 */
export function defaultBudget(limit: number): number {
  return Math.max(2 * MiB, Math.min(256 * MiB, Math.floor(limit / 12)));
}

export interface Thresholds {
  /** Working set at which page cache is dropped and the GC runs. */
  soft: number;
  /** Memory the kernel cannot reclaim (anonymous + kernel) at which new buffered work is shed. */
  hard: number;
  /** A level is left only once the reading falls this far below its threshold (no flapping). */
  hysteresis: number;
}

export const SOFT_RATIO = 0.5;
export const HARD_RATIO = 0.8;
export const HYSTERESIS_RATIO = 0.05;

export function thresholds(limit: number, soft = SOFT_RATIO, hard = HARD_RATIO): Thresholds {
  return { soft: Math.floor(limit * soft), hard: Math.floor(limit * hard), hysteresis: Math.floor(limit * HYSTERESIS_RATIO) };
}

export interface Pressure {
  /** What the kubelet sees: the cgroup's working set, or the process's RSS without a cgroup limit. */
  workingSet: number;
  /** What page-cache dropping cannot free: cgroup usage minus its page cache, or the RSS. */
  committed: number;
  measuredBy: "cgroup" | "process";
}

/**
 * The cgroup's figures (page cache included) are used when it has a limit or holds kagami alone
 * (a container or a service, limited or not: Spegel's page cache grew in an unlimited one); a
 * cgroup shared with other processes (a login session) says little about kagami, so then the
 * process's RSS stands in.
 */
export function pressureOf(s: MemorySample): Pressure {
  if ((s.limit !== null || s.alone === true) && s.workingSet !== null && s.usage !== null) {
    return { workingSet: s.workingSet, committed: Math.max(0, s.usage - (s.pageCache ?? 0)), measuredBy: "cgroup" };
  }
  // File-backed pages in the RSS (the executable's) are reclaimable: they never make it hard.
  return { workingSet: s.rss, committed: s.rssAnon ?? s.rss, measuredBy: "process" };
}

/** The next level from the current one: raised at a threshold, lowered only below it by the hysteresis. */
export function nextLevel(current: PressureLevel, p: Pressure, t: Thresholds): PressureLevel {
  const hardAt = current === "hard" ? t.hard - t.hysteresis : t.hard;
  if (p.committed >= hardAt) return "hard";
  const softAt = current === "ok" ? t.soft : t.soft - t.hysteresis;
  if (p.workingSet >= softAt || p.committed >= softAt) return "soft";
  return "ok";
}

/**
 * Page cache to drop: none until the working set reaches the soft threshold, then enough to
 * bring it under the threshold less the hysteresis, until it is there (`dropping`: the previous
 * call returned more than 0).
 */
export function pageCacheExcess(p: Pressure, t: Thresholds, dropping: boolean): number {
  if (p.measuredBy !== "cgroup") return 0; // page cache is not in an RSS reading
  if (!dropping && p.workingSet < t.soft) return 0;
  return Math.max(0, p.workingSet - (t.soft - t.hysteresis));
}
