// The memory governor: samples the cgroup and the process on a timer, derives the pressure
// level, and acts on it. soft: drop the page cache of served files (coldest first) and run the
// GC; hard: shouldShed() turns new buffer-needing requests away. Files sent by sendfile never
// need the budget and are never shed. Disabled (--memory-governor=false) it only measures.
import { totalmem } from "node:os";
import type { Registry } from "prom-client";
import type { Logger } from "../observability/log.ts";
import { ByteBudget } from "./budget.ts";
import { budgetedStream, DEFAULT_CHUNK_BYTES, SOURCE_BUFFER_BYTES } from "./budget-stream.ts";
import { findMemoryCgroup, readMemory, type MemoryCgroup, type MemorySample } from "./cgroup.ts";
import { registerGovernorMetrics } from "./metrics.ts";
import { inlineLoop, lazyLoop, workerLoop, type PageCacheLoop, type PageCacheStats } from "./pagecache-loop.ts";
import { pageCacheControlAvailable, ServedFiles } from "./pagecache.ts";
import {
  defaultBudget,
  nextLevel,
  pressureOf,
  resolveLimit,
  thresholds,
  type Limit,
  type Pressure,
  type PressureLevel,
  type ShedReason,
  type Thresholds,
} from "./policy.ts";

export interface GovernorConfig {
  /** --memory-limit: overrides the cgroup's limit. */
  memoryLimit?: number | undefined;
  /** --memory-budget: overrides the budget derived from the limit. */
  memoryBudget?: number | undefined;
  /** --memory-governor: false leaves the budget unbounded and never sheds nor drops cache. */
  memoryGovernor: boolean;
}

export interface GovernorOptions {
  /** Root under which /proc and the cgroup file systems are read (tests: a fixture directory). */
  root?: string;
  /** Sampling period without pressure, clamped to 100 ms .. 5 s (default 500 ms). */
  intervalMs?: number;
  /** Sampling period under pressure, clamped to 20 ms .. intervalMs (default 100 ms). */
  pressureIntervalMs?: number;
  /** Cap on readers queued for the budget (see ByteBudget). */
  maxWaiters?: number | undefined;
  chunkBytes?: number;
  /** Memory reader (tests); the default reads the cgroup found under `root`. */
  read?: () => MemorySample;
  gc?: () => void;
  /** Tracker for the inline page-cache loop (tests); setting it implies no worker. */
  servedFiles?: ServedFiles;
  /** Run the page-cache loop in a Worker (default: yes, where the cgroup is read for real). */
  pageCacheWorker?: boolean;
  totalMemory?: number;
  now?: () => number;
}

export interface GovernorState {
  enabled: boolean;
  level: PressureLevel;
  limit: Limit;
  thresholds: Thresholds;
  measuredBy: Pressure["measuredBy"];
  cgroup: { version: number; dir: string } | null;
  memory: {
    workingSet: number;
    committed: number;
    rss: number;
    rssPeak: number | null;
    usage: number | null;
    pageCache: number | null;
    inactiveFile: number | null;
    oomKills: number | null;
  };
  /** total is null when unbounded. */
  budget: { total: number | null; inUse: number; peakInUse: number; waiters: number; chunkBytes: number };
  pageCache: ({ controllable: boolean } & PageCacheStats) | null;
  gcRuns: number;
  samples: number;
  shed: Record<string, number>;
  sampledAt: string;
}

export interface Governor {
  readonly enabled: boolean;
  readonly budget: ByteBudget;
  /**
   * Waits for the budget a source (a peer's or upstream's fetch body) will buffer by itself:
   * call it before opening the source, pass the result to stream() as reservedBytes, or
   * release it on the budget if opening fails.
   */
  reserveSource(signal?: AbortSignal): Promise<number>;
  /**
   * Puts a body under the budget: chunks are read only when the consumer asks, and only with
   * budget. Disabled, the source is returned as it is (and a reservation released).
   */
  stream(source: ReadableStream<Uint8Array>, opts?: { signal?: AbortSignal; reservedBytes?: number }): ReadableStream<Uint8Array>;
  /**
   * True (and counted) when a new request that needs buffers should be turned away now: the
   * pressure is hard, or so many readers wait for the budget that one more would be refused.
   */
  shouldShed(): boolean;
  /** Counts a request shed for another reason (e.g. the budget's queue was full). */
  noteShed(reason: ShedReason): void;
  /**
   * A response starts sending a local file; call the returned function when it is done. Its
   * page cache is then dropped only after that of every other served file.
   */
  fileSending(path: string, size: number): () => void;
  /**
   * A response sent (or is sending) a local file by sendfile: under pressure its page cache is
   * dropped, coldest file first. Bun does not tell when sendfile is done, so call it when the
   * response is made; a file used in the last 10 minutes counts as possibly still sending.
   */
  noteFileServed(path: string, size: number): void;
  /** Reads memory now and acts on it (the timer calls this). */
  sample(): GovernorState;
  state(): GovernorState;
  /** The latest sample, as the metrics read it. */
  readonly latest: { sample: MemorySample; pressure: Pressure; limit: Limit; level: PressureLevel; shed: ReadonlyMap<string, number> };
  /** Registers the kagami_memory_*, kagami_budget_* and kagami_shed_* metrics on `registry`. */
  registerMetrics(registry: Registry): void;
  stop(): void;
}

// Under pressure a full GC runs at most every 2 s, and only once the RSS has grown by 4 MiB
// since the last one: a process that sits at the soft level idle is not collected in a loop.
const MIN_GC_INTERVAL_MS = 2000;
const GC_GROWTH_BYTES = 4 * 2 ** 20;

export function createGovernor(config: GovernorConfig, log: Logger, opts: GovernorOptions = {}): Governor {
  const enabled = config.memoryGovernor;
  const root = opts.root ?? "/";
  const now = opts.now ?? Date.now;
  const cgroup: MemoryCgroup | null = opts.read ? null : findMemoryCgroup(root);
  const read = opts.read ?? (() => readMemory(cgroup, root));
  const gc = opts.gc ?? (() => Bun.gc(true));
  const chunkBytes = opts.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  const totalMemory = opts.totalMemory ?? totalmem();

  let sample = read();
  let limit = resolveLimit(config.memoryLimit, sample.limit, totalMemory);
  let t = thresholds(limit.bytes);
  const budgetFor = (l: Limit): number => (enabled ? (config.memoryBudget ?? defaultBudget(l.bytes)) : Infinity);
  const budget = new ByteBudget({ total: budgetFor(limit), maxWaiters: opts.maxWaiters });
  let pressure = pressureOf(sample);
  let level: PressureLevel = "ok";
  let lastGc = -Infinity;
  let rssAtGc = -Infinity;
  let gcRuns = 0;
  let samples = 0;
  const shed = new Map<string, number>();

  // Disabled, nothing is dropped: no loop at all.
  const inline = (): PageCacheLoop => inlineLoop(opts.servedFiles ?? new ServedFiles({ now }));
  const useWorker = (opts.pageCacheWorker ?? true) && !opts.servedFiles && cgroup !== null && pageCacheControlAvailable();
  let pageCache: PageCacheLoop | null = !enabled
    ? null
    : useWorker && cgroup
      ? lazyLoop(
          () =>
            workerLoop(cgroup, (error) => {
              log.warn({ err: error }, "page-cache worker failed: dropping page cache from the main thread");
              pageCache = inline();
            }),
          "worker",
        )
      : inline();

  log.info(
    {
      enabled,
      limit: limit.bytes,
      limitSource: limit.source,
      budget: enabled ? budget.total : null,
      cgroup: cgroup ? `v${cgroup.version} ${cgroup.dir}` : null,
      measuredBy: pressure.measuredBy,
    },
    enabled ? "memory governor on" : "memory governor off: budget unbounded, no shedding",
  );

  const act = (): void => {
    if (!enabled) return;
    pageCache?.sampled(pressure, t);
    if (level === "ok") return;
    const at = now();
    if (at - lastGc >= MIN_GC_INTERVAL_MS && sample.rss >= rssAtGc + GC_GROWTH_BYTES) {
      lastGc = at;
      rssAtGc = sample.rss;
      gcRuns++;
      gc();
    }
  };

  const doSample = (): GovernorState => {
    sample = read();
    samples++;
    pressure = pressureOf(sample);
    // The limit is read live: a pod resized in place gets a new limit without a restart.
    const nextLimit = resolveLimit(config.memoryLimit, sample.limit, totalMemory);
    if (nextLimit.bytes !== limit.bytes) {
      log.info({ from: limit.bytes, to: nextLimit.bytes, limitSource: nextLimit.source }, "memory limit changed");
      limit = nextLimit;
      t = thresholds(limit.bytes);
      budget.resize(budgetFor(limit));
    }
    const next = nextLevel(level, pressure, t);
    if (next !== level) {
      const fields = { from: level, to: next, workingSet: pressure.workingSet, committed: pressure.committed, rss: sample.rss, limit: limit.bytes };
      if (next === "ok") log.info(fields, "memory pressure over");
      else log.warn(fields, next === "hard" ? "memory pressure hard: shedding new fetches" : "memory pressure soft: dropping page cache");
      level = next;
    }
    act();
    return state();
  };

  const state = (): GovernorState => ({
    enabled,
    level,
    limit,
    thresholds: t,
    measuredBy: pressure.measuredBy,
    cgroup: sample.cgroup ? { version: sample.cgroup.version, dir: sample.cgroup.dir } : null,
    memory: {
      workingSet: pressure.workingSet,
      committed: pressure.committed,
      rss: sample.rss,
      rssPeak: sample.rssPeak,
      usage: sample.usage,
      pageCache: sample.pageCache,
      inactiveFile: sample.inactiveFile,
      oomKills: sample.oomKills,
    },
    budget: {
      total: budget.unbounded ? null : budget.total,
      inUse: budget.inUse,
      peakInUse: budget.peakInUse,
      waiters: budget.waiters,
      chunkBytes,
    },
    pageCache: pageCache ? { controllable: pageCacheControlAvailable(), ...pageCache.stats() } : null,
    gcRuns,
    samples,
    shed: Object.fromEntries(shed),
    sampledAt: new Date(now()).toISOString(),
  });

  const noteShed = (reason: ShedReason): void => {
    shed.set(reason, (shed.get(reason) ?? 0) + 1);
  };

  // Under pressure the level is sampled more often, so shedding starts and stops promptly (the
  // page cache has its own, faster loop).
  const intervalMs = Math.min(5000, Math.max(100, opts.intervalMs ?? 500));
  const pressureIntervalMs = Math.min(intervalMs, Math.max(20, opts.pressureIntervalMs ?? 100));
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;
  const tick = (): void => {
    try {
      doSample();
    } catch (e) {
      log.error({ err: e }, "memory governor sample failed");
    }
    if (stopped) return;
    timer = setTimeout(tick, enabled && level !== "ok" ? pressureIntervalMs : intervalMs);
    timer.unref();
  };
  tick();

  const governor: Governor = {
    enabled,
    budget,
    reserveSource: (signal) => budget.acquire(SOURCE_BUFFER_BYTES, signal),
    stream(source, { signal, reservedBytes } = {}) {
      if (enabled) return budgetedStream(source, budget, { chunkBytes, signal, reservedBytes });
      if (reservedBytes) budget.release(reservedBytes);
      return source;
    },
    shouldShed() {
      if (!enabled) return false;
      const reason = level === "hard" ? "memory_pressure" : budget.full ? "budget_queue_full" : null;
      if (reason === null) return false;
      noteShed(reason);
      return true;
    },
    noteShed,
    fileSending: (path, size) => pageCache?.sending(path, size) ?? (() => {}),
    noteFileServed: (path, size) => pageCache?.served(path, size),
    sample: doSample,
    state,
    get latest() {
      return { sample, pressure, limit, level, shed };
    },
    registerMetrics: (registry) => registerGovernorMetrics(governor, registry),
    stop() {
      stopped = true;
      clearTimeout(timer);
      pageCache?.stop();
    },
  };
  return governor;
}
